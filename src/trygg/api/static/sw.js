// trygg console service worker: makes the console installable, keeps its shell
// for when the network drops, and shows alarms as system notifications (the page
// asks for them with registration.showNotification; a tap opens the console).
"use strict";

const SHELL = "trygg-shell-v2";
const FILES = ["/console", "/console/static/console.css", "/console/static/console.js",
  "/console/static/icon.svg", "/console/manifest.webmanifest"];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(SHELL).then((c) => c.addAll(FILES)).catch(() => null).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (e) => {
  e.waitUntil((async () => {
    for (const k of await caches.keys()) if (k !== SHELL) await caches.delete(k);
    await self.clients.claim();
  })());
});

// The shell: network first (a new console version wins), the cache when offline.
// The API and the sign-in (/api, /auth) are never cached: alerts are always live.
self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || !FILES.includes(url.pathname)) return;
  e.respondWith(fetch(e.request).then((r) => {
    if (r.ok) { const copy = r.clone(); caches.open(SHELL).then((c) => c.put(e.request, copy)); }
    return r;
  }).catch(() => caches.match(e.request)));
});

self.addEventListener("notificationclick", (e) => {
  e.notification.close();
  e.waitUntil((async () => {
    const all = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const c of all) if (new URL(c.url).pathname.startsWith("/console")) return c.focus();
    return self.clients.openWindow("/console");
  })());
});
