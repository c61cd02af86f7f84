// How this client's NAT maps, learned from the tracker's STUN (RFC 5780 4.3, the
// mapping tests), from the very socket that holds the tracker session:
//
//   I    Binding to the tracker's primary address  -> mapped X1, and OTHER-ADDRESS
//   II   Binding to the other IP, primary port     -> X2;  X2 = X1: endpoint-independent
//   III  Binding to the other IP and port          -> X3;  X3 = X2: address-dependent,
//                                                          else address-and-port-dependent
//
// Endpoint-independent mapping ("cone", or no NAT) is what a plain hole punch needs:
// the address the tracker saw is the one the peer will see. The other two ("hard",
// "symmetric") give each destination its own mapping, so the peer needs another way
// in (a birthday punch, birthday-punch.ts, or a relay). A tracker with no second
// address (no OTHER-ADDRESS) cannot tell: the answer is "unknown", and punch.ts
// treats it as today's plain punch.
import { ATTR, CLASS_SUCCESS, METHOD, MessageBuilder, addressAttribute, messageType, type TransportAddress } from '../stun/codec.js';
import type { NatType } from './messages.js';
import { formatPeerAddr } from './peer-addr.js';
import { StunTransactions, type StunExchangeOptions } from './stun-transactions.js';
import type { TrackerClient } from './tracker-client.js';

export interface NatDiscovery {
  nat: NatType;
  /** Our public address as the tracker's primary address sees it (test I), if it answered. */
  mapped: string | null;
  /** Why the answer is "unknown", when it is. */
  reason?: string;
}

const BINDING_REQUEST = messageType(METHOD.BINDING, 0);

/** Whether mapping behaviour is easy to punch through: endpoint-independent, or not known to be otherwise. */
export function isEasy(nat: NatType | undefined): boolean {
  return nat !== 'address-dependent' && nat !== 'address-and-port-dependent';
}

/** Runs the mapping tests through `client`'s socket. Never throws for a network reason: those give "unknown". */
export async function discoverNat(client: TrackerClient, opts: StunExchangeOptions = {}): Promise<NatDiscovery> {
  await client.ready();
  const tracker = client.trackerAddress!;
  const binding = async (host: string, port: number): Promise<{ mapped: TransportAddress; other: TransportAddress | null } | null> => {
    const request = new MessageBuilder(BINDING_REQUEST, StunTransactions.transactionId()).build({ withFingerprint: true });
    const reply = await client.stun(request, host, port, opts).catch(() => null);
    if (reply === null || reply.message.cls !== CLASS_SUCCESS) return null;
    const mapped = addressAttribute(reply.message, ATTR.XOR_MAPPED_ADDRESS) ?? addressAttribute(reply.message, ATTR.MAPPED_ADDRESS);
    return mapped === null ? null : { mapped, other: addressAttribute(reply.message, ATTR.OTHER_ADDRESS) };
  };
  const text = (a: TransportAddress): string => formatPeerAddr(a.address, a.port);

  const first = await binding(tracker.address, tracker.port);
  if (first === null) return { nat: 'unknown', mapped: null, reason: 'the tracker did not answer STUN' };
  const x1 = text(first.mapped);
  if (first.other === null) return { nat: 'unknown', mapped: x1, reason: 'the tracker has no second address (no OTHER-ADDRESS)' };
  const second = await binding(first.other.address, tracker.port);
  if (second === null) return { nat: 'unknown', mapped: x1, reason: 'the tracker\'s other address did not answer' };
  if (text(second.mapped) === x1) return { nat: 'endpoint-independent', mapped: x1 };
  const third = await binding(first.other.address, first.other.port);
  if (third === null) return { nat: 'unknown', mapped: x1, reason: 'the tracker\'s other address and port did not answer' };
  return { nat: text(third.mapped) === text(second.mapped) ? 'address-dependent' : 'address-and-port-dependent', mapped: x1 };
}
