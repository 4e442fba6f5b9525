// Test-only: a real OpenID Connect provider (panva's oidc-provider, certified
// by the OpenID Foundation) on 127.0.0.1, for tests/test_console_signin.py.
//
//   node tests/oidc/provider.mjs   (configured by environment variables)
//     OIDC_PORT           the port (127.0.0.1 only)
//     OIDC_REDIRECT_URI   trygg's callback, the one redirect URI of the client
//     OIDC_CLIENT_ID      default "trygg"
//     OIDC_CLIENT_SECRET  default "trygg-test-secret"
//     OIDC_ACCOUNTS       JSON: login -> extra claims, e.g.
//                         {"kari": {"preferred_username": "kari",
//                                   "trygg_role": "care_staff", "trygg_teams": ["team-a"]}}
//
// Sign-in uses the provider's development interactions: a login form that
// takes any login and password, then a consent page. A login not in
// OIDC_ACCOUNTS is an account with only its sub and preferred_username.
// PKCE is required of every client, so trygg must send a code challenge.
// Prints "ready <issuer>" when it listens.
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || "{}");

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID || "trygg",
      client_secret: process.env.OIDC_CLIENT_SECRET || "trygg-test-secret",
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: {
    openid: ["sub"],
    profile: ["preferred_username", "name"],
    trygg: ["trygg_role", "trygg_teams"],
  },
  scopes: ["openid", "profile", "trygg"],
  pkce: { required: () => true },
  cookies: { keys: ["test-only-cookie-key"] },
  async findAccount(ctx, id) {
    const extra = accounts[id] || {};
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...extra };
      },
    };
  },
});

provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(port, "127.0.0.1", () => console.log(`ready ${issuer}`));
