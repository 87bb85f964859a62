/**
 * SCRAM-SHA-256 password authentication, server side (RFC 5802 / RFC 7677, as PostgreSQL uses it): the password
 * never crosses the wire, and the client checks the server knows it too. No channel binding (no TLS yet).
 *
 * @module
 */
import { backendMessage, concatBytes, cStrings, type FrontendMessage, ProtocolError, readCString } from "./wire.ts";

const ITERATIONS = 4096;
const MECHANISM = "SCRAM-SHA-256";
const encoder = new TextEncoder();

/** What the exchange needs from the session: reading the client's next message and writing to it. */
export type ScramChannel = {
  next(): Promise<FrontendMessage | undefined>;
  write(bytes: Uint8Array): Promise<void>;
};

/** Why a login failed: the client gets ErrorResponse 28P01. */
export class AuthenticationFailedError extends Error {
  /** @param user who tried */
  constructor(user: string) {
    super(`password authentication failed for user "${user}"`);
    this.name = "AuthenticationFailedError";
  }
}

/** The server's secrets for one password (a SCRAM verifier): computed once, kept in memory. */
export type ScramSecret = { iterations: number; salt: Uint8Array; stored_key: Uint8Array; server_key: Uint8Array };

/** Derives the secret from a password, with a fresh random salt. */
export async function scramSecret(password: string): Promise<ScramSecret> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const salted = await pbkdf2(password, salt, ITERATIONS);
  const client_key = await hmac(salted, "Client Key");
  return {
    iterations: ITERATIONS,
    salt,
    stored_key: await sha256(client_key),
    server_key: await hmac(salted, "Server Key"),
  };
}

/** Runs the exchange; resolves when the client proved it knows the password, else throws. */
export async function authenticate(channel: ScramChannel, secret: ScramSecret, user: string): Promise<void> {
  await channel.write(authentication(10, cStrings(MECHANISM, "")));
  const initial = await expectPassword(channel);
  const [mechanism, after] = readCString(initial.body, 0);
  if (mechanism !== MECHANISM) throw new ProtocolError(`unsupported SASL mechanism "${mechanism}"`);
  const view = new DataView(initial.body.buffer, initial.body.byteOffset, initial.body.byteLength);
  const length = view.getInt32(after);
  const client_first = new TextDecoder().decode(initial.body.subarray(after + 4, after + 4 + length));
  const match = /^([nyp])(?:=[^,]*)?,[^,]*,(n=[^,]*,r=([^,]+).*)$/.exec(client_first);
  if (match === null || match[1] === "p") throw new ProtocolError("malformed SCRAM client-first message");
  const [, , client_first_bare, client_nonce] = match;
  const nonce = client_nonce + base64(crypto.getRandomValues(new Uint8Array(18)));
  const server_first = `r=${nonce},s=${base64(secret.salt)},i=${secret.iterations}`;
  await channel.write(authentication(11, encoder.encode(server_first)));
  const response = await expectPassword(channel);
  const client_final = new TextDecoder().decode(response.body);
  const final_match = /^(c=[^,]*,r=([^,]+)),p=([A-Za-z0-9+/=]+)$/.exec(client_final);
  if (final_match === null || final_match[2] !== nonce) throw new AuthenticationFailedError(user);
  const auth_message = `${client_first_bare},${server_first},${final_match[1]}`;
  const proof = fromBase64(final_match[3]);
  const signature = await hmac(secret.stored_key, auth_message);
  if (proof.length !== signature.length) throw new AuthenticationFailedError(user);
  const client_key = proof.map((byte, i) => byte ^ signature[i]);
  if (!equal(await sha256(client_key), secret.stored_key)) throw new AuthenticationFailedError(user);
  const server_signature = await hmac(secret.server_key, auth_message);
  await channel.write(authentication(12, encoder.encode(`v=${base64(server_signature)}`)));
}

async function expectPassword(channel: ScramChannel): Promise<FrontendMessage> {
  const message = await channel.next();
  if (message === undefined) throw new ProtocolError("client left during authentication");
  if (message.type !== "p") throw new ProtocolError(`expected a password message, got "${message.type}"`);
  return message;
}

function authentication(code: number, payload: Uint8Array): Uint8Array {
  const head = new Uint8Array(4);
  new DataView(head.buffer).setInt32(0, code);
  return backendMessage("R", concatBytes([head, payload]));
}

async function pbkdf2(password: string, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password.normalize("NFKC")), "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: salt as BufferSource, iterations },
    key,
    256,
  );
  return new Uint8Array(bits);
}

async function hmac(key: Uint8Array, message: string): Promise<Uint8Array> {
  const imported = await crypto.subtle.importKey("raw", key as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", imported, encoder.encode(message)));
}

async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
}

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
