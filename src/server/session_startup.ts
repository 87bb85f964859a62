/**
 * The first packets of a connection, before it is a session: an HTTP request on the same port (administration),
 * SSL or GSS requests (answered `N`), a CancelRequest, or the startup packet whose parameters start a session.
 *
 * @module
 */
import { isHttpRequest, serveAdminHttp } from "./admin_http.ts";
import type { AdminRequest } from "../branch_admin.ts";
import type { ClientConnection } from "./client_connection.ts";
import { ProtocolError } from "./wire.ts";

/** What the first packets may need from the server. */
export type StartupContext = {
  /** A CancelRequest arrived. */
  cancel(pid: number, secret: number): void;
  /** Runs an administration request; undefined: none is served. */
  admin?: (request: AdminRequest) => Promise<unknown>;
  /** `GET /metrics`. */
  metrics?: () => Promise<string>;
  /** `GET /status`. */
  status?: () => Promise<unknown>;
};

/** SSL or GSS requests a client may make before its startup packet. */
const MAX_NEGOTIATIONS = 3;

/** The startup packet's parameters; undefined when the connection was something else and is done. */
export async function readStartup(
  client: ClientConnection,
  ctx: StartupContext,
): Promise<Record<string, string> | undefined> {
  const head = await client.next(() => client.buffered(4) ? client.reader.peek(4) : undefined);
  if (head === undefined) return undefined;
  if (isHttpRequest(head)) {
    await serveAdminHttp(client.conn, client.reader.takeBuffered(), ctx);
    return undefined;
  }
  for (let packets = 0; packets <= MAX_NEGOTIATIONS; packets++) {
    const packet = await client.next(() => client.reader.takeStartup());
    if (packet === undefined) return undefined;
    if (packet.kind === "ssl" || packet.kind === "gssenc") {
      await client.write(new TextEncoder().encode("N")); // no TLS yet: the client goes on in plain text
      continue;
    }
    if (packet.kind === "cancel") {
      ctx.cancel(packet.pid, packet.secret);
      return undefined;
    }
    return packet.params;
  }
  throw new ProtocolError("too many SSL or GSS requests");
}
