"""Print the Debian archive URI this machine's apt already uses.

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}
(one-line and deb822 formats) and prints the first URI serving the release's
main suite, so that the TimescaleDB source package is fetched from the same
mirror as everything else.
"""

import glob
import re
import sys

codename = ""
for line in open("/etc/os-release"):
    if line.startswith("VERSION_CODENAME="):
        codename = line.split("=", 1)[1].strip().strip('"')

one_line = re.compile(r"^deb(?:-src)?\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)")
files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
for name in files:
    try:
        text = open(name).read()
    except OSError:
        continue
    for line in text.splitlines():
        m = one_line.match(line.strip())
        if m and m.group(2) == codename:
            print(m.group(1))
            sys.exit(0)
for name in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(name).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, value = line.split(":", 1)
                fields[key.strip()] = value.split()
        if codename in fields.get("Suites", []) and fields.get("URIs"):
            print(fields["URIs"][0])
            sys.exit(0)
sys.exit("no Debian archive for %r found in /etc/apt sources" % codename)
