/**
 * @module
 * Standard Webhooks signing (https://www.standardwebhooks.com), so receivers
 * can verify with an existing library. The signed content is
 * `${webhook-id}.${webhook-timestamp}.${body}`; the key is the base64 part of
 * a `whsec_…` secret; the result goes out as `webhook-signature: v1,<base64>`.
 * The timestamp is in whole seconds and is fresh for every attempt, while the
 * id stays the same so a receiver can drop duplicates.
 */

const SECRET_PREFIX = "whsec_";
const encoder = new TextEncoder();

/** What one webhook request is signed over. */
export interface WebhookMessage {
  /** `webhook-id`: the same for every attempt at one delivery. */
  id: string;
  /** `webhook-timestamp`: when this attempt was made, in epoch seconds. */
  timestampSeconds: number;
  /** The exact body bytes sent, as a string. */
  body: string;
}

/** Signs one message with a `whsec_…` secret; returns the `v1,<base64>` signature. */
export async function signWebhook(
  secret: string,
  messageId: string,
  timestampSeconds: number,
  body: string,
): Promise<string> {
  if (!Number.isSafeInteger(timestampSeconds) || timestampSeconds < 0) {
    throw new RangeError(`webhook timestamp must be whole epoch seconds, got ${timestampSeconds}`);
  }
  const key = await crypto.subtle.importKey(
    "raw",
    decodeSecret(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signed = encoder.encode(`${messageId}.${timestampSeconds}.${body}`);
  const signature = await crypto.subtle.sign("HMAC", key, signed);
  return `v1,${encodeBase64(new Uint8Array(signature))}`;
}

/**
 * The request headers for one message: `webhook-id`, `webhook-timestamp`,
 * `webhook-signature` (only when there is a secret) and a JSON content type.
 */
export async function webhookHeaders(
  secret: string | undefined,
  message: WebhookMessage,
): Promise<Record<string, string>> {
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "webhook-id": message.id,
    "webhook-timestamp": String(message.timestampSeconds),
  };
  if (secret !== undefined) {
    headers["webhook-signature"] = await signWebhook(
      secret,
      message.id,
      message.timestampSeconds,
      message.body,
    );
  }
  return headers;
}

/** The HMAC key: base64 after an optional `whsec_` prefix, as the libraries read it. */
function decodeSecret(secret: string): Uint8Array<ArrayBuffer> {
  const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  let binary: string;
  try {
    binary = atob(encoded);
  } catch {
    throw new TypeError("webhook secret is not valid base64 after the whsec_ prefix");
  }
  if (binary.length === 0) throw new TypeError("webhook secret is empty");
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

function encodeBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}
