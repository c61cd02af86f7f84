#!/usr/bin/env python3
# Sends UDP datagrams with a forged IPv4 source (root: a raw socket with IP_HDRINCL).
# stdin: one JSON object a line, {"src":"ip","sport":N,"dst":"ip","dport":N,"hex":"..."};
# each is sent as one datagram, headers and checksums built here. Prints "sent N" at the end.
import json, socket, struct, sys

def checksum(b: bytes) -> int:
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def datagram(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    ulen = 8 + len(payload)
    pseudo = s + d + struct.pack('!BBH', 0, socket.IPPROTO_UDP, ulen)
    ucs = checksum(pseudo + struct.pack('!HHHH', sport, dport, ulen, 0) + payload) or 0xffff
    udp = struct.pack('!HHHH', sport, dport, ulen, ucs) + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + ulen, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, s, d)
    ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
    return ip + udp

raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
n = 0
for line in sys.stdin:
    if not line.strip(): continue
    m = json.loads(line)
    raw.sendto(datagram(m['src'], m['sport'], m['dst'], m['dport'], bytes.fromhex(m['hex'])), (m['dst'], 0))
    n += 1
print('sent', n)
