// sobani_udp: the tracker's UDP socket, owned by the main thread, moving
// datagrams in batches with recvmmsg/sendmmsg and calling into JS once per
// batch (never once per datagram).
//
// One UdpSocket object owns the UDP sockets of up to MAX_ENDPOINTS bound addresses
// (option `endpoints`; the index of each is its "socket" in request and SEND_TO
// records), each non-blocking, with a uv_poll_t and a send queue of its own.
//
// Receive: from startReceiving() on, each socket is watched by its poll on the main
// thread's libuv loop (before that, datagrams wait in the kernel's buffer: the
// tracker starts receiving once its shards serve). On readable, one "pass" drains
// up to PASS_CAP datagrams from that socket with recvmmsg and appends each one, as
// a request record (see src/wire/frame.ts), to the pending batch of the shard its
// source IP routes to. The batch buffers and their peers tables
// belong to JS: C asks for them with onBatch(shard, full) and only holds them for
// the duration of the pass (JS transfers them to worker threads between passes).
//
// Send: sendReplies() walks a reply batch and sends every record with sendmmsg,
// each message's iovec pointing into the batch itself (no copy): a REPLY from the
// socket its request came in on, a SEND_TO from the socket it names. What the
// kernel refuses for lack of buffer waits in a bounded send queue (see "the send
// queue").
//
// Linux only (recvmmsg/sendmmsg). Node-API only, so one build serves every Node
// version with N-API 8.
#define NAPI_VERSION 8
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "napi-helpers.h"

// One entry of a peers table: the source sockaddr of request #i of a batch
// (a sockaddr_in or sockaddr_in6, 28 bytes at most), then at PEER_SOCKET_AT the
// index of the socket it came in on (a REPLY leaves from there), padded to 32.
#define PEER_BYTES 32
#define PEER_SOCKET_AT 28
// Bound addresses one UdpSocket may own (a STUN server needs 4).
#define MAX_ENDPOINTS 4
// Datagrams per recvmmsg call, and per receive pass at most (so the event
// loop keeps turning; the poll is level-triggered and fires again).
#define RECV_VLEN 64
#define PASS_CAP 1024
// Datagrams per sendmmsg call at most.
#define SEND_VLEN 1024
// Room for any address text: INET6_ADDRSTRLEN (46) + '%' + an interface name.
#define ADDR_TEXT_MAX 64
// Bytes of a request record besides the address text and the payload.
#define RECORD_OVERHEAD (1 + 2 + 2 + 1 + 2)
#define BUCKET_MASK 4095u

// ---- send and receive error reasons ------------------------------------------
// Counted per reason (errno name), never thrown; stats() reports the non-zero ones.

enum {
  R_EAGAIN, R_ENOBUFS, R_ECONNREFUSED, R_EHOSTUNREACH, R_ENETUNREACH, R_EACCES,
  R_EPERM, R_EMSGSIZE, R_EINVAL, R_EAFNOSUPPORT, R_ENOMEM, R_ECONNRESET, R_EFAULT, R_EBADF,
  R_MALFORMED, R_QUEUE_FULL, R_CLOSED, R_OTHER, R_COUNT
};
static const char* const REASON_NAMES[R_COUNT] = {
  "EAGAIN", "ENOBUFS", "ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES",
  "EPERM", "EMSGSIZE", "EINVAL", "EAFNOSUPPORT", "ENOMEM", "ECONNRESET", "EFAULT", "EBADF",
  "malformed", "queueFull", "closed", "other"
};

static int reason_of_errno(int e) {
  switch (e) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
      return R_EAGAIN;
    case ENOBUFS: return R_ENOBUFS;
    case ECONNREFUSED: return R_ECONNREFUSED;
    case EHOSTUNREACH: return R_EHOSTUNREACH;
    case ENETUNREACH: return R_ENETUNREACH;
    case EACCES: return R_EACCES;
    case EPERM: return R_EPERM;
    case EMSGSIZE: return R_EMSGSIZE;
    case EINVAL: return R_EINVAL;
    case EAFNOSUPPORT: return R_EAFNOSUPPORT;
    case ENOMEM: return R_ENOMEM;
    case ECONNRESET: return R_ECONNRESET;
    case EFAULT: return R_EFAULT;
    case EBADF: return R_EBADF;
    default: return R_OTHER;
  }
}

// ---- address text and bucket ------------------------------------------------

// Dotted IPv4 text of 4 bytes, as uv_inet_ntop writes it. Returns its length.
static int format_v4(const uint8_t* b, char* out) {
  int n = 0;
  for (int i = 0; i < 4; i++) {
    unsigned v = b[i];
    if (v >= 100) { out[n++] = (char)('0' + v / 100); v %= 100; out[n++] = (char)('0' + v / 10); out[n++] = (char)('0' + v % 10); }
    else if (v >= 10) { out[n++] = (char)('0' + v / 10); out[n++] = (char)('0' + v % 10); }
    else out[n++] = (char)('0' + v);
    if (i < 3) out[n++] = '.';
  }
  out[n] = 0;
  return n;
}

// The text Node's dgram puts in rinfo.address for this source address: libuv's
// uv_inet_ntop, plus "%<interface>" for a link-local IPv6 address with a scope
// (as node's AddressToJS does). IPv4 and v4-mapped take a fast path that gives
// the same text. Returns the length, or -1.
static int format_address(const struct sockaddr* sa, char* out) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in* a4 = (const struct sockaddr_in*)sa;
    return format_v4((const uint8_t*)&a4->sin_addr, out);
  }
  if (sa->sa_family != AF_INET6) return -1;
  const struct sockaddr_in6* a6 = (const struct sockaddr_in6*)sa;
  const uint8_t* b = a6->sin6_addr.s6_addr;
  static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
  if (memcmp(b, mapped, 12) == 0) {
    memcpy(out, "::ffff:", 7);
    return 7 + format_v4(b + 12, out + 7);
  }
  if (uv_inet_ntop(AF_INET6, b, out, ADDR_TEXT_MAX) != 0) return -1;
  int n = (int)strlen(out);
  if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr) && a6->sin6_scope_id > 0) {
    char name[ADDR_TEXT_MAX];
    size_t size = sizeof name;
    if (uv_if_indextoname(a6->sin6_scope_id, name, &size) != 0) {
      snprintf(name, sizeof name, "%u", (unsigned)a6->sin6_scope_id);
    }
    n += snprintf(out + n, (size_t)(ADDR_TEXT_MAX - n), "%%%s", name);
    if (n >= ADDR_TEXT_MAX) n = ADDR_TEXT_MAX - 1;
  }
  return n;
}

// routing.ts prefixBucket: FNV-1a over the first 8 bytes (the /64) of an IPv6
// address, folded to 12 bits.
static uint32_t bucket_of_prefix(const uint8_t* b) {
  uint32_t h = 0x811c9dc5u;
  for (int i = 0; i < 8; i++) h = (h ^ b[i]) * 0x01000193u;
  return (h ^ (h >> 16)) & BUCKET_MASK;
}

// routing.ts addressBucket over 8-bit text: IPv6 (not v4-mapped) by its /64
// (bucket_of_prefix); else FNV-1a over the text, skipping a leading "::ffff:"
// when dotted IPv4 follows, stopping at '%', folded to 12 bits. The addon's only
// copy of the hash: addressBucket() from JS uses it too.
static uint32_t bucket_of_text(const char* a, int n) {
  int start = 0;
  if (n > 7 && memcmp(a, "::ffff:", 7) == 0 && memchr(a + 7, '.', (size_t)(n - 7)) != NULL) start = 7;
  else if (memchr(a, ':', (size_t)n) != NULL && n < ADDR_TEXT_MAX) {
    char buf[ADDR_TEXT_MAX];
    memcpy(buf, a, (size_t)n);
    buf[n] = 0;
    char* pct = strchr(buf, '%');
    if (pct != NULL) *pct = 0;
    struct in6_addr a6;
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (inet_pton(AF_INET6, buf, &a6) == 1 && memcmp(a6.s6_addr, mapped, 12) != 0) return bucket_of_prefix(a6.s6_addr);
  }
  uint32_t h = 0x811c9dc5u;
  for (int i = start; i < n; i++) {
    uint32_t c = (uint8_t)a[i];
    if (c == '%') break;
    h = (h ^ c) * 0x01000193u;
  }
  return (h ^ (h >> 16)) & BUCKET_MASK;
}

// Parses "1.2.3.4", "::ffff:1.2.3.4", IPv6 text (optionally "%zone") into a
// destination for a socket of `family`. Returns -1 on success, else a reason.
static int parse_destination(int family, const uint8_t* text, size_t len, unsigned port,
                             struct sockaddr_in6* out, socklen_t* out_len) {
  char buf[ADDR_TEXT_MAX + 1];
  if (len == 0 || len > ADDR_TEXT_MAX) return R_EINVAL;
  memcpy(buf, text, len);
  buf[len] = 0;
  unsigned scope = 0;
  char* pct = strchr(buf, '%');
  if (pct != NULL) {
    *pct = 0;
    const char* zone = pct + 1;
    scope = if_nametoindex(zone);
    if (scope == 0) {
      char* end = NULL;
      unsigned long v = strtoul(zone, &end, 10);
      if (end == zone || *end != 0) return R_EINVAL;
      scope = (unsigned)v;
    }
  }
  struct in_addr a4;
  struct in6_addr a6;
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET, buf, &a4) == 1) {
    if (family == AF_INET) {
      struct sockaddr_in* s4 = (struct sockaddr_in*)out;
      s4->sin_family = AF_INET;
      s4->sin_port = htons((uint16_t)port);
      s4->sin_addr = a4;
      *out_len = sizeof(struct sockaddr_in);
    } else {
      out->sin6_family = AF_INET6;
      out->sin6_port = htons((uint16_t)port);
      out->sin6_addr.s6_addr[10] = 0xff;
      out->sin6_addr.s6_addr[11] = 0xff;
      memcpy(&out->sin6_addr.s6_addr[12], &a4, 4);
      *out_len = sizeof(struct sockaddr_in6);
    }
    return -1;
  }
  if (inet_pton(AF_INET6, buf, &a6) == 1) {
    if (family == AF_INET6) {
      out->sin6_family = AF_INET6;
      out->sin6_port = htons((uint16_t)port);
      out->sin6_addr = a6;
      out->sin6_scope_id = scope;
      *out_len = sizeof(struct sockaddr_in6);
      return -1;
    }
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
      struct sockaddr_in* s4 = (struct sockaddr_in*)out;
      s4->sin_family = AF_INET;
      s4->sin_port = htons((uint16_t)port);
      memcpy(&s4->sin_addr, &a6.s6_addr[12], 4);
      *out_len = sizeof(struct sockaddr_in);
      return -1;
    }
    return R_EAFNOSUPPORT; // an IPv6 destination for an IPv4 socket
  }
  return R_EINVAL;
}

// ---- the send queue ---------------------------------------------------------------
// At the first send the kernel refuses for lack of buffer (EAGAIN; ENOBUFS alike),
// the unsent datagrams are copied here and the socket is watched for writable; it
// is drained with sendmmsg then, up to the next refusal. While it is not empty, new
// sends join its end: order is kept, and no syscall is made that is bound to fail
// (one per datagram, a storm of them on the main thread when overloaded, before).
// Bounded: a datagram past SENDQ_MAX_DATAGRAMS or SENDQ_MAX_BYTES of payload is
// dropped and counted (sendErrors.queueFull); what is still queued at close is
// counted too (sendErrors.closed). ~2.2 MiB, taken at the first refusal, given back
// at close. (Node's dgram queues without bound instead.)
#define SENDQ_MAX_DATAGRAMS 4096
#define SENDQ_MAX_BYTES (2u << 20)

typedef struct {
  struct sockaddr_in6 to;
  socklen_t to_len;
  uint32_t off, len; // the payload, in the byte ring
  uint8_t wrap;      // its payload starts the byte ring over at 0
} queued_datagram;

// Two rings: the datagrams, and their payload bytes (a payload never straddles the
// end: one that does not fit there starts over at 0).
typedef struct {
  queued_datagram* items; // SENDQ_MAX_DATAGRAMS; NULL until first needed
  uint8_t* bytes;         // SENDQ_MAX_BYTES
  uint32_t head, count;
  uint32_t bytes_head, bytes_tail; // live payloads from bytes_head to bytes_tail, across the end if wrapped
  int wrapped;
  uint64_t payload_bytes; // queued now
} send_queue;

// ---- the socket ---------------------------------------------------------------

typedef struct {
  napi_value buf_v, peers_v; // handles, valid only inside the pass's handle scope
  uint8_t* buf;
  size_t buf_len;
  uint8_t* peers;
  size_t peers_len;
  uint32_t len, count;
  uint8_t status; // SHARD_NONE / SHARD_OPEN / SHARD_BUSY, for the current pass
} shard_pass;

enum { SHARD_NONE = 0, SHARD_OPEN = 1, SHARD_BUSY = 2 };

typedef struct udp_socket udp_socket;

// One bound address: its socket, and what waits to be sent from it.
typedef struct {
  udp_socket* owner;
  uint8_t index; // in the owner's endpoints: the record's "socket"
  int fd;
  int family;
  send_queue q;
} endpoint;

struct udp_socket {
  napi_env env;
  napi_ref wrapper_ref; // strong while open, so an unreferenced open socket lives on
  napi_ref on_batch_ref, on_received_ref, state_ref, resource_ref;
  napi_async_context async_ctx;
  endpoint ep[MAX_ENDPOINTS];
  unsigned endpoints;
  uv_poll_t* poll[MAX_ENDPOINTS]; // ep[i]'s, data = &ep[i]
  int receiving;
  int closed;
  poll_guard* guard;    // closes the poll if the environment goes away first (napi-helpers.h)
  int async_live;
  int in_pass;        // a receive pass is running (JS may be on the stack above it)
  struct pass_ctx* pass; // that pass, while in_pass
  int release_after;  // close() ran during a pass: release the JS side when it ends
  uint32_t shards;
  uint32_t max_datagram;
  size_t batch_bytes;   // bytes of the last batch buffer JS handed out (0: none yet)
  uint8_t* too_large;
  size_t too_large_len;

  size_t slot;
  uint8_t* rbuf;
  struct mmsghdr rmsgs[RECV_VLEN];
  struct iovec riov[RECV_VLEN];
  struct sockaddr_in6 rname[RECV_VLEN];

  struct mmsghdr* smsgs;
  struct iovec* siov;
  struct sockaddr_in6* sname;

  shard_pass* sp;
  int32_t* state_scratch;

  uint64_t datagrams_in, bytes_in, datagrams_out, bytes_out, too_large_count, shard_busy, dropped_at_stop;
  uint64_t receive_passes, recv_calls, send_calls;
  uint64_t send_blocked_calls; // send syscalls refused for lack of buffer (EAGAIN/ENOBUFS)
  uint64_t send_queued;        // datagrams that went through the send queue
  uint64_t recv_errors[R_COUNT];
  uint64_t send_errors[R_COUNT];
};

// ---- small N-API helpers --------------------------------------------------------
// (the ones bench/native/bench.c uses too are in napi-helpers.h)

// Tags every UdpSocket object (bench.c's EchoServer has a tag of its own).
static const napi_type_tag UDP_SOCKET_TAG = { 0x736f62616e697564ULL, 0x70736f636b657431ULL };

static udp_socket* unwrap_this(napi_env env, napi_callback_info info) {
  return get_wrapped_this(env, info, &UDP_SOCKET_TAG, "not a UdpSocket");
}

// Throws an Error like node's own socket errors: code 'EADDRINUSE', errno, syscall, address, port.
static napi_value throw_errno(napi_env env, int err, const char* syscall, const char* host, int port) {
  char detail[96];
  if (host != NULL) snprintf(detail, sizeof detail, "%s:%d", host, port);
  napi_value error = make_errno_error(env, err, syscall, host != NULL ? detail : NULL);
  if (host != NULL) {
    set_named_string(env, error, "address", host);
    set_named_double(env, error, "port", port);
  }
  napi_throw(env, error);
  return NULL;
}

// A JS exception thrown by a callback: report it like any event handler's
// (process 'uncaughtException', or print and exit).
static void report_pending_exception(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value e;
    if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
  }
}

// ---- closing ------------------------------------------------------------------

// Stops polling and closes the sockets. No JS; safe from a finalizer or the
// environment's cleanup (the guard's hook calls it for a socket still open then).
static void close_socket_now(udp_socket* s) {
  if (s->closed) return;
  s->closed = 1;
  s->receiving = 0;
  close_polls(s->guard, s->poll, MAX_ENDPOINTS);
  s->guard = NULL;
  for (unsigned i = 0; i < s->endpoints; i++) {
    endpoint* ep = &s->ep[i];
    s->send_errors[R_CLOSED] += ep->q.count; // never sent
    ep->q.count = 0;
    ep->q.payload_bytes = 0;
    if (ep->fd >= 0) {
      close(ep->fd);
      ep->fd = -1;
    }
  }
}

static void close_socket_for_env(void* owner) { close_socket_now(owner); }

// Everything a closed socket no longer needs: the strong references (to its own
// object, its callbacks, `state` and the async resource), the async context and
// the buffers. Released at close, not left to the finalizer: the
// callbacks usually capture whatever holds this object (NativeIo does), so while
// these references are strong the object is never collected and the finalizer
// never runs. Needs a handle scope; never during a receive pass (see close_from_js).
static void release_all(napi_env env, udp_socket* s) {
  if (s->async_live) {
    napi_async_destroy(env, s->async_ctx);
    s->async_live = 0;
  }
  napi_ref* refs[] = { &s->wrapper_ref, &s->on_batch_ref, &s->on_received_ref, &s->state_ref, &s->resource_ref };
  for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
    if (*refs[i] != NULL) { napi_delete_reference(env, *refs[i]); *refs[i] = NULL; }
  }
  free(s->too_large); s->too_large = NULL;
  free(s->rbuf); s->rbuf = NULL;
  free(s->smsgs); s->smsgs = NULL;
  free(s->siov); s->siov = NULL;
  free(s->sname); s->sname = NULL;
  free(s->sp); s->sp = NULL;
  free(s->state_scratch); s->state_scratch = NULL;
  for (unsigned i = 0; i < s->endpoints; i++) {
    free(s->ep[i].q.items); s->ep[i].q.items = NULL;
    free(s->ep[i].q.bytes); s->ep[i].q.bytes = NULL;
  }
}

static void finalize_socket(napi_env env, void* data, void* hint) {
  (void)hint;
  udp_socket* s = data;
  close_socket_now(s);
  release_all(env, s);
  free(s);
}

static void cut_pass_short(udp_socket* s);

// close() from JS. During a receive pass (close() called by a callback), the
// pass still uses the references and buffers, so they are released when it ends.
static void close_from_js(napi_env env, udp_socket* s) {
  close_socket_now(s);
  if (s->in_pass) {
    cut_pass_short(s);
    s->release_after = 1;
  } else {
    release_all(env, s);
  }
}

// ---- receiving ------------------------------------------------------------------

static void on_poll(uv_poll_t* h, int status, int events);

// Points an endpoint's poll at what its socket waits for now: readable while
// receiving, writable while its send queue holds datagrams. Returns 0 or a libuv
// error. An inactive poll no longer keeps the loop alive.
static int watch(endpoint* ep) {
  udp_socket* s = ep->owner;
  uv_poll_t* poll = s->poll[ep->index];
  if (poll == NULL) return 0;
  int events = (s->receiving ? UV_READABLE : 0) | (ep->q.count > 0 ? UV_WRITABLE : 0);
  if (events == 0) return uv_poll_stop(poll);
  return uv_poll_start(poll, events, on_poll);
}

static int watch_all(udp_socket* s) {
  int e = 0;
  for (unsigned i = 0; i < s->endpoints && e == 0; i++) e = watch(&s->ep[i]);
  return e;
}

typedef struct pass_ctx {
  int open;
  napi_handle_scope hs;
  napi_callback_scope cs;
  int32_t* state;
  int aborted; // the socket was closed or stopped by a callback: no more JS in this pass
} pass_ctx;

// Points p->state at the JS Int32Array's memory (or at scratch memory if it is
// unusable). Done again after every callback: JS could have detached its buffer.
static void state_bind(udp_socket* s, pass_ctx* p) {
  p->state = s->state_scratch;
  napi_value state;
  if (napi_get_reference_value(s->env, s->state_ref, &state) == napi_ok && state != NULL) {
    napi_typedarray_type type;
    size_t n, off;
    void* data;
    napi_value ab;
    if (napi_get_typedarray_info(s->env, state, &type, &n, &data, &ab, &off) == napi_ok &&
        type == napi_int32_array && data != NULL && n >= 2 * (size_t)s->shards) {
      p->state = data;
    }
  }
}

// Opens the scopes JS is called in. Returns 0 (and aborts the pass) if it cannot:
// JS is then not called at all.
static int pass_open(udp_socket* s, pass_ctx* p) {
  if (p->aborted) return 0;
  if (p->open) return 1;
  napi_env env = s->env;
  if (napi_open_handle_scope(env, &p->hs) != napi_ok) { p->aborted = 1; return 0; }
  p->open = 1;
  p->cs = NULL;
  napi_value resource = NULL;
  if (!s->async_live || napi_get_reference_value(env, s->resource_ref, &resource) != napi_ok || resource == NULL ||
      napi_open_callback_scope(env, resource, s->async_ctx, &p->cs) != napi_ok) {
    p->cs = NULL;
    p->aborted = 1;
    return 0;
  }
  state_bind(s, p);
  return 1;
}

static void pass_close(udp_socket* s, pass_ctx* p) {
  if (!p->open) return;
  if (p->cs != NULL) napi_close_callback_scope(s->env, p->cs);
  napi_close_handle_scope(s->env, p->hs);
  p->open = 0;
}

static void state_write(udp_socket* s, pass_ctx* p) {
  for (uint32_t i = 0; i < s->shards; i++) {
    shard_pass* sp = &s->sp[i];
    if (sp->status == SHARD_OPEN) {
      p->state[2 * i] = (int32_t)sp->len;
      p->state[2 * i + 1] = (int32_t)sp->count;
    }
  }
}

// stopReceiving() or close() called by a callback during a pass: nothing more is
// appended and no more JS is called in this pass, so the batches' len/count are
// final now. They go to `state` at once, for JS to take back as soon as the call
// returns (NativeIo does); what the pass took from the kernel and did not append
// is counted when the callback returns (dropped_at_stop).
static void cut_pass_short(udp_socket* s) {
  pass_ctx* p = s->pass;
  if (p == NULL || p->aborted) return;
  if (p->open) {
    state_bind(s, p);
    state_write(s, p);
  }
  p->aborted = 1;
}

// Takes the buffers of a shard from its handles and its len/count from state.
// Success: SHARD_OPEN. A detached buffer or inconsistent state: SHARD_NONE.
static void shard_refresh(udp_socket* s, pass_ctx* p, uint32_t shard) {
  shard_pass* sp = &s->sp[shard];
  sp->status = SHARD_NONE;
  if (sp->buf_v == NULL || sp->peers_v == NULL) return;
  if (!get_bytes(s->env, sp->buf_v, &sp->buf, &sp->buf_len) || !get_bytes(s->env, sp->peers_v, &sp->peers, &sp->peers_len) ||
      sp->buf == NULL || sp->buf_len == 0 || sp->peers == NULL || sp->peers_len < PEER_BYTES) {
    return;
  }
  int32_t len = p->state[2 * shard], count = p->state[2 * shard + 1];
  if (len < 0 || count < 0 || (size_t)len > sp->buf_len || count > 0xffff || (size_t)count * PEER_BYTES > sp->peers_len) return;
  sp->len = (uint32_t)len;
  sp->count = (uint32_t)count;
  sp->status = SHARD_OPEN;
  s->batch_bytes = sp->buf_len;
}

// Calls onBatch(shard, full). Afterwards the shard is SHARD_OPEN with a buffer, or SHARD_BUSY.
static void call_on_batch(udp_socket* s, pass_ctx* p, uint32_t shard, int full) {
  napi_env env = s->env;
  if (!pass_open(s, p)) return;
  napi_value fn = NULL, undefined, argv[2], result = NULL;
  if (napi_get_reference_value(env, s->on_batch_ref, &fn) != napi_ok || fn == NULL) { p->aborted = 1; return; }
  state_write(s, p);
  shard_pass* sp = &s->sp[shard];
  sp->status = SHARD_NONE;
  sp->buf_v = sp->peers_v = NULL;
  napi_get_undefined(env, &undefined);
  napi_create_uint32(env, shard, &argv[0]);
  napi_get_boolean(env, full != 0, &argv[1]);
  if (napi_call_function(env, undefined, fn, 2, argv, &result) != napi_ok) {
    result = NULL;
    report_pending_exception(env);
  }
  if (s->closed || !s->receiving) cut_pass_short(s);
  if (p->aborted) return;
  state_bind(s, p);
  // The callback may have changed anything: take every open shard's buffer and state again.
  for (uint32_t i = 0; i < s->shards; i++) {
    if (i != shard && s->sp[i].status == SHARD_OPEN) shard_refresh(s, p, i);
  }
  bool is_array = false;
  uint32_t n = 0;
  if (result != NULL && napi_is_array(env, result, &is_array) == napi_ok && is_array &&
      napi_get_array_length(env, result, &n) == napi_ok && n >= 2 &&
      napi_get_element(env, result, 0, &sp->buf_v) == napi_ok &&
      napi_get_element(env, result, 1, &sp->peers_v) == napi_ok) {
    shard_refresh(s, p, shard);
    if (sp->status == SHARD_OPEN) return;
  }
  // null (or anything unusable): drop this shard's datagrams for the rest of the pass
  sp->status = SHARD_BUSY;
}

static void call_on_received(udp_socket* s, pass_ctx* p) {
  napi_env env = s->env;
  if (!pass_open(s, p)) return;
  napi_value fn = NULL, undefined, result;
  if (napi_get_reference_value(env, s->on_received_ref, &fn) != napi_ok || fn == NULL) { p->aborted = 1; return; }
  napi_get_undefined(env, &undefined);
  if (napi_call_function(env, undefined, fn, 0, NULL, &result) != napi_ok) report_pending_exception(env);
}

static int queue_datagram(endpoint* ep, const void* to, socklen_t to_len, const uint8_t* payload, size_t len);

static inline int lacks_buffer(int e) { return e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS; }

// Answers a datagram that came in on `ep` DATAGRAM_TOO_LARGE, from the same socket.
static void send_too_large(udp_socket* s, endpoint* ep, const struct sockaddr_in6* to, socklen_t to_len) {
  s->too_large_count++;
  if (ep->q.count > 0) { queue_datagram(ep, to, to_len, s->too_large, s->too_large_len); return; }
  ssize_t r;
  do {
    r = sendto(ep->fd, s->too_large, s->too_large_len, MSG_DONTWAIT, (const struct sockaddr*)to, to_len);
  } while (r < 0 && errno == EINTR);
  s->send_calls++;
  if (r < 0 && lacks_buffer(errno)) {
    s->send_blocked_calls++;
    queue_datagram(ep, to, to_len, s->too_large, s->too_large_len);
  } else if (r < 0) {
    s->send_errors[reason_of_errno(errno)]++;
  } else {
    s->datagrams_out++;
    s->bytes_out += (uint64_t)r;
  }
}

static inline int record_fits(const shard_pass* sp, size_t need) {
  return sp->len + need <= sp->buf_len && (size_t)(sp->count + 1) * PEER_BYTES <= sp->peers_len && sp->count < 0xffff;
}

// Handles datagram i of a recvmmsg on `ep`. Returns 1 if it was appended to a batch.
static int take_datagram(udp_socket* s, pass_ctx* p, endpoint* ep, unsigned i) {
  const struct mmsghdr* m = &s->rmsgs[i];
  uint32_t n = m->msg_len;
  s->datagrams_in++;
  s->bytes_in += n;
  const struct sockaddr_in6* from = &s->rname[i];
  socklen_t from_len = m->msg_hdr.msg_namelen;
  if (n > s->max_datagram || (m->msg_hdr.msg_flags & MSG_TRUNC)) {
    // The error is smaller than what triggered it, so answering cannot amplify.
    send_too_large(s, ep, from, from_len);
    return 0;
  }
  char addr[ADDR_TEXT_MAX];
  int alen = format_address((const struct sockaddr*)from, addr);
  if (alen <= 0) return 0;
  // IPv6 by its /64 straight from the address bytes (bucket_of_text would parse the text again)
  uint32_t bucket = from->sin6_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&from->sin6_addr)
    ? bucket_of_prefix(from->sin6_addr.s6_addr) : bucket_of_text(addr, alen);
  uint32_t shard = bucket % s->shards;
  shard_pass* sp = &s->sp[shard];
  // A record that cannot fit even an empty batch is too large, answered as such,
  // whether or not its shard keeps up (config caps maxDatagram below that; an
  // addon user may not). batch_bytes: the size of the batches JS hands out.
  size_t need = RECORD_OVERHEAD + (size_t)alen + n;
  if (s->batch_bytes > 0 && need > s->batch_bytes) { send_too_large(s, ep, from, from_len); return 0; }
  if (sp->status == SHARD_BUSY) { s->shard_busy++; return 0; }
  if (sp->status == SHARD_NONE) {
    call_on_batch(s, p, shard, 0);
    if (p->aborted) return 0;
    if (sp->status != SHARD_OPEN) { s->shard_busy++; return 0; }
  }
  if (!record_fits(sp, need)) {
    if (need > sp->buf_len) { send_too_large(s, ep, from, from_len); return 0; }
    if (sp->count == 0) { s->shard_busy++; return 0; } // a batch JS handed out with no room
    call_on_batch(s, p, shard, 1);
    if (p->aborted) return 0;
    if (sp->status != SHARD_OPEN) { s->shard_busy++; return 0; }
    if (!record_fits(sp, need)) {
      if (need > sp->buf_len) send_too_large(s, ep, from, from_len);
      else s->shard_busy++;
      return 0;
    }
  }
  uint8_t* o = sp->buf + sp->len;
  unsigned port = ntohs(from->sin6_port); // sin_port and sin6_port share the offset
  o[0] = ep->index;
  o[1] = (uint8_t)(port >> 8); o[2] = (uint8_t)port;
  o[3] = (uint8_t)(bucket >> 8); o[4] = (uint8_t)bucket;
  o[5] = (uint8_t)alen;
  memcpy(o + 6, addr, (size_t)alen);
  o += 6 + alen;
  o[0] = (uint8_t)(n >> 8); o[1] = (uint8_t)n;
  memcpy(o + 2, s->rbuf + (size_t)i * s->slot, n);
  sp->len += (uint32_t)need;
  uint8_t* peer = sp->peers + (size_t)sp->count * PEER_BYTES;
  memset(peer, 0, PEER_BYTES);
  memcpy(peer, from, from->sin6_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
  peer[PEER_SOCKET_AT] = ep->index;
  sp->count++;
  return 1;
}

static void receive_pass(udp_socket* s, endpoint* ep) {
  pass_ctx p = { 0 };
  unsigned total = 0;
  s->receive_passes++;
  s->in_pass = 1;
  s->pass = &p;
  while (total < PASS_CAP && !p.aborted) {
    for (unsigned i = 0; i < RECV_VLEN; i++) {
      s->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
      s->rmsgs[i].msg_hdr.msg_flags = 0;
    }
    // MSG_TRUNC: msg_len is the datagram's real length even when it did not fit.
    int r = recvmmsg(ep->fd, s->rmsgs, RECV_VLEN, MSG_DONTWAIT | MSG_TRUNC, NULL);
    s->recv_calls++;
    if (r < 0) {
      if (errno == EINTR) continue;
      // the poll is level-triggered: what is still in the socket is read next turn
      if (errno != EAGAIN && errno != EWOULDBLOCK) s->recv_errors[reason_of_errno(errno)]++;
      break;
    }
    if (r == 0) break;
    for (int i = 0; i < r; i++) {
      take_datagram(s, &p, ep, (unsigned)i);
      if (p.aborted) {
        // closed or stopped by the callback this datagram called: it and the rest
        // of what was taken from the kernel are dropped, and counted
        s->dropped_at_stop += (uint64_t)(r - i);
        for (int j = i + 1; j < r; j++) {
          s->datagrams_in++;
          s->bytes_in += s->rmsgs[j].msg_len;
        }
        break;
      }
    }
    total += (unsigned)r;
    if (r < RECV_VLEN) break; // drained
  }
  // Every pass that handed out a batch ends with onReceived(), even if nothing was
  // appended in the end: JS takes each batch's len/count back from `state` there.
  // (A pass cut short wrote them when it was stopped, and calls no more JS.)
  if (p.open && !p.aborted) {
    state_write(s, &p);
    call_on_received(s, &p);
  }
  for (uint32_t i = 0; i < s->shards; i++) {
    shard_pass* sp = &s->sp[i];
    sp->status = SHARD_NONE;
    sp->buf = sp->peers = NULL;
    sp->buf_v = sp->peers_v = NULL;
  }
  pass_close(s, &p); // runs nextTicks and microtasks queued by the callbacks
  s->in_pass = 0;
  s->pass = NULL;
  if (s->release_after) {
    s->release_after = 0;
    napi_handle_scope hs;
    napi_open_handle_scope(s->env, &hs);
    release_all(s->env, s);
    napi_close_handle_scope(s->env, hs);
  }
}

static void drain_queue(endpoint* ep);

static void on_poll(uv_poll_t* h, int status, int events) {
  endpoint* ep = h->data;
  udp_socket* s = ep->owner;
  if (s->closed) return;
  if (status < 0) {
    // libuv stopped the poll on a socket error: clear the error and watch again
    s->recv_errors[reason_of_errno(-status)]++;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(ep->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    watch(ep);
    return;
  }
  if ((events & UV_WRITABLE) && ep->q.count > 0) drain_queue(ep);
  if ((events & UV_READABLE) && s->receiving && !s->closed) receive_pass(s, ep);
}

// ---- sending ------------------------------------------------------------------

// Copies a datagram to the end of an endpoint's send queue (see "the send
// queue"); the first one starts the watch for writable. Returns 0 if it was
// dropped: full.
static int queue_datagram(endpoint* ep, const void* to, socklen_t to_len, const uint8_t* payload, size_t len) {
  udp_socket* s = ep->owner;
  send_queue* q = &ep->q;
  if (q->items == NULL) {
    q->items = malloc(SENDQ_MAX_DATAGRAMS * sizeof *q->items);
    q->bytes = malloc(SENDQ_MAX_BYTES);
    if (q->items == NULL || q->bytes == NULL) {
      free(q->items); free(q->bytes);
      q->items = NULL; q->bytes = NULL;
      s->send_errors[R_QUEUE_FULL]++;
      return 0;
    }
  }
  uint32_t at;
  int wrap = 0;
  if (q->count == SENDQ_MAX_DATAGRAMS || len > SENDQ_MAX_BYTES) { s->send_errors[R_QUEUE_FULL]++; return 0; }
  if (!q->wrapped) {
    if (SENDQ_MAX_BYTES - q->bytes_tail >= len) at = q->bytes_tail;
    else if (q->bytes_head >= len) { at = 0; wrap = 1; }
    else { s->send_errors[R_QUEUE_FULL]++; return 0; }
  } else {
    if (q->bytes_head - q->bytes_tail >= len) at = q->bytes_tail;
    else { s->send_errors[R_QUEUE_FULL]++; return 0; }
  }
  queued_datagram* d = &q->items[(q->head + q->count) % SENDQ_MAX_DATAGRAMS];
  memset(&d->to, 0, sizeof d->to);
  memcpy(&d->to, to, to_len);
  d->to_len = to_len;
  d->off = at;
  d->len = (uint32_t)len;
  d->wrap = (uint8_t)wrap;
  if (len > 0) memcpy(q->bytes + at, payload, len);
  if (wrap) q->wrapped = 1;
  q->bytes_tail = at + (uint32_t)len;
  q->payload_bytes += len;
  s->send_queued++;
  if (q->count++ == 0) watch(ep);
  return 1;
}

// Takes the first n datagrams off the queue (sent, or dropped).
static void queue_pop(send_queue* q, uint32_t n) {
  for (uint32_t i = 0; i < n && q->count > 0; i++) {
    q->payload_bytes -= q->items[q->head].len;
    q->head = (q->head + 1) % SENDQ_MAX_DATAGRAMS;
    q->count--;
    if (q->count > 0 && q->items[q->head].wrap) q->wrapped = 0; // the oldest now starts over at 0
  }
  if (q->count == 0) {
    q->head = 0;
    q->bytes_head = q->bytes_tail = 0;
    q->wrapped = 0;
  } else {
    q->bytes_head = q->items[q->head].off;
  }
}

// Writable: sends the queue's datagrams in order, SEND_VLEN per sendmmsg, until it
// is empty (then stops watching for writable) or the kernel refuses again. On
// ENOBUFS the first datagram is dropped (counted): the socket may well stay
// writable, and each writable event must make progress.
static void drain_queue(endpoint* ep) {
  udp_socket* s = ep->owner;
  send_queue* q = &ep->q;
  while (q->count > 0) {
    unsigned n = q->count < SEND_VLEN ? q->count : SEND_VLEN;
    for (unsigned i = 0; i < n; i++) {
      queued_datagram* d = &q->items[(q->head + i) % SENDQ_MAX_DATAGRAMS];
      s->siov[i].iov_base = q->bytes + d->off;
      s->siov[i].iov_len = d->len;
      struct msghdr* h = &s->smsgs[i].msg_hdr;
      memset(h, 0, sizeof *h);
      h->msg_name = &d->to;
      h->msg_namelen = d->to_len;
      h->msg_iov = &s->siov[i];
      h->msg_iovlen = 1;
    }
    int r = sendmmsg(ep->fd, s->smsgs, n, MSG_DONTWAIT);
    s->send_calls++;
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) { s->send_blocked_calls++; return; } // wait for writable
      if (errno == ENOBUFS) { s->send_blocked_calls++; s->send_errors[R_ENOBUFS]++; queue_pop(q, 1); break; }
      s->send_errors[reason_of_errno(errno)]++; // this datagram fails on its own
      queue_pop(q, 1);
      continue;
    }
    if (r == 0) { s->send_errors[R_OTHER]++; queue_pop(q, 1); continue; }
    for (int j = 0; j < r; j++) s->bytes_out += s->smsgs[j].msg_len;
    s->datagrams_out += (uint64_t)r;
    queue_pop(q, (uint32_t)r);
  }
  if (q->count == 0) watch(ep);
}

// Sends smsgs[0..n) from `ep` with sendmmsg. At the first refusal for lack of
// buffer the rest go to its send queue. Returns how many went out now.
static uint32_t flush_sends(endpoint* ep, unsigned n) {
  udp_socket* s = ep->owner;
  unsigned i = 0;
  uint32_t ok = 0;
  while (i < n) {
    int r = sendmmsg(ep->fd, s->smsgs + i, n - i, MSG_DONTWAIT);
    s->send_calls++;
    if (r < 0) {
      if (errno == EINTR) continue;
      if (lacks_buffer(errno)) {
        s->send_blocked_calls++;
        for (; i < n; i++) {
          const struct msghdr* h = &s->smsgs[i].msg_hdr;
          queue_datagram(ep, h->msg_name, h->msg_namelen, h->msg_iov->iov_base, h->msg_iov->iov_len);
        }
        break;
      }
      s->send_errors[reason_of_errno(errno)]++; // the failed message is skipped
      i++;
      continue;
    }
    if (r == 0) { s->send_errors[R_OTHER]++; i++; continue; }
    for (int j = 0; j < r; j++) s->bytes_out += s->smsgs[i + (unsigned)j].msg_len;
    s->datagrams_out += (uint64_t)r;
    ok += (uint32_t)r;
    i += (unsigned)r; // a short count: the next call starts at the message that failed
  }
  return ok;
}

// sendReplies(out, peers, count): `count` is the number of requests in the batch
// `peers` belongs to. A REPLY may only name one of them: an entry past it was
// written for an earlier batch in the same (reused) table, a client it must not
// reach. A REPLY leaves from the socket its request came in on, a SEND_TO from the
// socket it names; consecutive records from one socket go in one sendmmsg.
static napi_value Sock_sendReplies(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  udp_socket* s = unwrap_this(env, info);
  if (s == NULL) return NULL;
  uint8_t *out, *peers = NULL;
  size_t out_len, peers_len = 0;
  if (argc < 1 || !get_bytes(env, argv[0], &out, &out_len)) return throw_type_error(env, "sendReplies(out, peers, count): out must be a Uint8Array or ArrayBuffer");
  if (argc >= 2) {
    napi_valuetype t;
    napi_typeof(env, argv[1], &t);
    if (t != napi_undefined && t != napi_null && !get_bytes(env, argv[1], &peers, &peers_len)) {
      return throw_type_error(env, "sendReplies(out, peers, count): peers must be an ArrayBuffer");
    }
  }
  double count_d = -1;
  if (argc < 3 || napi_get_value_double(env, argv[2], &count_d) != napi_ok || !(count_d >= 0 && count_d <= 65535) || count_d != (double)(uint32_t)count_d) {
    return throw_type_error(env, "sendReplies(out, peers, count): count must be the batch's number of requests, an integer in 0..65535");
  }
  size_t count = (size_t)count_d;
  uint32_t sent = 0;
  if (s->closed || out == NULL) {
    napi_value v;
    napi_create_uint32(env, 0, &v);
    return v;
  }
  size_t o = 0;
  unsigned n = 0;
  endpoint* from = &s->ep[0]; // the socket smsgs[0..n) leave from
  while (o < out_len) {
    uint8_t kind = out[o];
    size_t payload, len, next;
    struct sockaddr_in6* to = &s->sname[n];
    socklen_t to_len = 0;
    int reason = -1;
    endpoint* ep = NULL;
    if (kind == 0) { // REPLY: u8 0 | u16 index | u16 len | payload
      if (o + 5 > out_len) { s->send_errors[R_MALFORMED]++; break; }
      size_t index = ((size_t)out[o + 1] << 8) | out[o + 2];
      len = ((size_t)out[o + 3] << 8) | out[o + 4];
      payload = o + 5;
      next = payload + len;
      if (next > out_len) { s->send_errors[R_MALFORMED]++; break; }
      if (peers == NULL || index >= count || (index + 1) * PEER_BYTES > peers_len || peers[index * PEER_BYTES + PEER_SOCKET_AT] >= s->endpoints) {
        reason = R_MALFORMED;
      } else {
        ep = &s->ep[peers[index * PEER_BYTES + PEER_SOCKET_AT]];
        memcpy(to, peers + index * PEER_BYTES, sizeof *to);
        if (to->sin6_family == AF_INET && ep->family == AF_INET) to_len = sizeof(struct sockaddr_in);
        else if (to->sin6_family == AF_INET6 && ep->family == AF_INET6) to_len = sizeof(struct sockaddr_in6);
        else reason = R_MALFORMED; // an entry that was never written
      }
    } else if (kind == 1) { // SEND_TO: u8 1 | u8 socket | u16 port | u8 addrLen | addr | u16 len | payload
      if (o + 5 > out_len) { s->send_errors[R_MALFORMED]++; break; }
      unsigned port = ((unsigned)out[o + 2] << 8) | out[o + 3];
      size_t alen = out[o + 4];
      size_t at = o + 5 + alen;
      if (at + 2 > out_len) { s->send_errors[R_MALFORMED]++; break; }
      len = ((size_t)out[at] << 8) | out[at + 1];
      payload = at + 2;
      next = payload + len;
      if (next > out_len) { s->send_errors[R_MALFORMED]++; break; }
      if (out[o + 1] >= s->endpoints) {
        reason = R_MALFORMED; // no such socket
      } else {
        ep = &s->ep[out[o + 1]];
        reason = parse_destination(ep->family, out + o + 5, alen, port, to, &to_len);
      }
    } else {
      s->send_errors[R_MALFORMED]++;
      break;
    }
    o = next;
    if (reason >= 0) { s->send_errors[reason]++; continue; }
    if (ep != from && n > 0) {
      // another socket: what was gathered for the last one goes first (`to` moves to the front)
      sent += flush_sends(from, n);
      memcpy(&s->sname[0], to, sizeof *to);
      to = &s->sname[0];
      n = 0;
    }
    from = ep;
    if (ep->q.count > 0) { queue_datagram(ep, to, to_len, out + payload, len); continue; } // behind what waits
    s->siov[n].iov_base = out + payload;
    s->siov[n].iov_len = len;
    struct msghdr* h = &s->smsgs[n].msg_hdr;
    h->msg_name = to;
    h->msg_namelen = to_len;
    h->msg_iov = &s->siov[n];
    h->msg_iovlen = 1;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
    s->smsgs[n].msg_len = 0;
    if (++n == SEND_VLEN) { sent += flush_sends(ep, n); n = 0; }
  }
  if (n > 0) sent += flush_sends(from, n);
  napi_value v;
  napi_create_uint32(env, sent, &v);
  return v;
}

// ---- the JS class ---------------------------------------------------------------

static int open_socket(napi_env env, const char* host, int port, int rcvbuf, int sndbuf, int* fd_out, int* family_out) {
  struct sockaddr_in6 addr;
  socklen_t addr_len;
  int family;
  memset(&addr, 0, sizeof addr);
  int dual = strcmp(host, "::") == 0;
  if (dual) {
    family = AF_INET6;
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    addr.sin6_port = htons((uint16_t)port);
    addr_len = sizeof(struct sockaddr_in6);
  } else {
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1) {
      struct sockaddr_in* s4 = (struct sockaddr_in*)&addr;
      s4->sin_family = AF_INET;
      s4->sin_port = htons((uint16_t)port);
      s4->sin_addr = a4;
      addr_len = sizeof(struct sockaddr_in);
      family = AF_INET;
    } else if (parse_destination(AF_INET6, (const uint8_t*)host, strlen(host), (unsigned)port, &addr, &addr_len) < 0) {
      family = AF_INET6;
    } else {
      char msg[160];
      snprintf(msg, sizeof msg, "host must be an IP address literal, got '%.100s'", host);
      napi_throw_error(env, "EINVAL", msg);
      return 0;
    }
  }
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 && dual && (errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT)) {
    // no IPv6 here: IPv4 on every address
    family = AF_INET;
    struct sockaddr_in* s4 = (struct sockaddr_in*)&addr;
    memset(&addr, 0, sizeof addr);
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    s4->sin_addr.s_addr = htonl(INADDR_ANY);
    addr_len = sizeof(struct sockaddr_in);
    dual = 0;
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  }
  if (fd < 0) { throw_errno(env, errno, "socket", NULL, 0); return 0; }
  if (dual) {
    // Without this the socket may be IPv6-only (net.ipv6.bindv6only), and IPv4
    // clients could not reach it: refuse to start rather than serve half the world.
    int off = 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) {
      int e = errno;
      close(fd);
      napi_throw(env, make_errno_error(env, e, "setsockopt IPV6_V6ONLY", "(cannot make '::' take IPv4 too, so IPv4 clients could not reach it)"));
      return 0;
    }
  }
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) {
    int e = errno; close(fd); throw_errno(env, e, "setsockopt SO_RCVBUF", NULL, 0); return 0;
  }
  if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) != 0) {
    int e = errno; close(fd); throw_errno(env, e, "setsockopt SO_SNDBUF", NULL, 0); return 0;
  }
  if (bind(fd, (struct sockaddr*)&addr, addr_len) != 0) {
    int e = errno; close(fd); throw_errno(env, e, "bind", host, port); return 0;
  }
  *fd_out = fd;
  *family_out = family;
  return 1;
}

static napi_value Sock_new(napi_env env, napi_callback_info info) {
  napi_value self, v;
  napi_value opts = constructor_options(env, info, "UdpSocket", &self);
  if (opts == NULL) return NULL;
  napi_valuetype t = napi_undefined;

  // The bound addresses: option endpoints [{ host, port }, ...], or host and port for one.
  char hosts[MAX_ENDPOINTS][ADDR_TEXT_MAX + 1];
  double ports[MAX_ENDPOINTS];
  unsigned endpoints = 1;
  napi_value list;
  strcpy(hosts[0], "::");
  if (get_opt(env, opts, "endpoints", &list)) {
    bool is_array = false;
    uint32_t n = 0;
    if (napi_is_array(env, list, &is_array) != napi_ok || !is_array || napi_get_array_length(env, list, &n) != napi_ok || n < 1 || n > MAX_ENDPOINTS) {
      return throw_type_error(env, "option endpoints must be an array of 1 to 4 { host, port }");
    }
    for (uint32_t i = 0; i < n; i++) {
      napi_value e;
      napi_valuetype et = napi_undefined;
      strcpy(hosts[i], "::");
      if (napi_get_element(env, list, i, &e) != napi_ok || napi_typeof(env, e, &et) != napi_ok || et != napi_object ||
          get_opt_string(env, e, "host", hosts[i], sizeof hosts[i]) < 0) {
        return throw_type_error(env, "option endpoints must be an array of 1 to 4 { host, port }");
      }
      if (!get_opt_integer(env, e, "port", 0, 0, 65535, &ports[i])) return NULL;
    }
    endpoints = n;
  } else {
    if (get_opt_string(env, opts, "host", hosts[0], sizeof hosts[0]) < 0) return throw_type_error(env, "option host must be a string");
    if (!get_opt_integer(env, opts, "port", 0, 0, 65535, &ports[0])) return NULL;
  }
  double rcvbuf, sndbuf, max_datagram, shards;
  if (!get_opt_integer(env, opts, "recvBufferSize", 0, 0, 2147483647.0, &rcvbuf)) return NULL;
  if (!get_opt_integer(env, opts, "sendBufferSize", 0, 0, 2147483647.0, &sndbuf)) return NULL;
  if (!get_opt_integer(env, opts, "maxDatagram", 2048, 0, 65535, &max_datagram)) return NULL;
  if (!get_opt_integer(env, opts, "shards", 1, 1, 4096, &shards)) return NULL;

  uint8_t* tl = NULL;
  size_t tl_len = 0;
  if (!get_opt(env, opts, "tooLargeReply", &v) || !get_bytes(env, v, &tl, &tl_len)) return throw_type_error(env, "option tooLargeReply must be a Buffer");
  napi_value state_v, on_batch_v, on_received_v;
  if (!get_opt(env, opts, "state", &state_v)) return throw_type_error(env, "option state must be an Int32Array");
  {
    bool is = false;
    napi_typedarray_type type;
    size_t n, off;
    void* data;
    napi_value ab;
    if (napi_is_typedarray(env, state_v, &is) != napi_ok || !is ||
        napi_get_typedarray_info(env, state_v, &type, &n, &data, &ab, &off) != napi_ok ||
        type != napi_int32_array || n < 2 * (size_t)shards) {
      return throw_type_error(env, "option state must be an Int32Array of length shards * 2");
    }
  }
  if (!get_opt(env, opts, "onBatch", &on_batch_v) || (napi_typeof(env, on_batch_v, &t), t != napi_function)) return throw_type_error(env, "option onBatch must be a function");
  if (!get_opt(env, opts, "onReceived", &on_received_v) || (napi_typeof(env, on_received_v, &t), t != napi_function)) return throw_type_error(env, "option onReceived must be a function");

  int fds[MAX_ENDPOINTS], families[MAX_ENDPOINTS];
  for (unsigned i = 0; i < endpoints; i++) {
    if (!open_socket(env, hosts[i], (int)ports[i], (int)rcvbuf, (int)sndbuf, &fds[i], &families[i])) {
      for (unsigned j = 0; j < i; j++) close(fds[j]);
      return NULL;
    }
  }

  udp_socket* s = calloc(1, sizeof *s);
  if (s == NULL) {
    for (unsigned i = 0; i < endpoints; i++) close(fds[i]);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  s->env = env;
  s->endpoints = endpoints;
  for (unsigned i = 0; i < endpoints; i++) {
    s->ep[i].owner = s;
    s->ep[i].index = (uint8_t)i;
    s->ep[i].fd = fds[i];
    s->ep[i].family = families[i];
  }
  s->shards = (uint32_t)shards;
  s->max_datagram = (uint32_t)max_datagram;
  s->too_large_len = tl_len;
  s->too_large = malloc(tl_len > 0 ? tl_len : 1);
  if (tl_len > 0) memcpy(s->too_large, tl, tl_len);
  // maxDatagram + 1 bytes at least: a longer datagram is seen as too large (MSG_TRUNC)
  s->slot = ((size_t)s->max_datagram + 1 + 15) & ~(size_t)15;
  s->rbuf = malloc(s->slot * RECV_VLEN);
  s->smsgs = calloc(SEND_VLEN, sizeof *s->smsgs);
  s->siov = calloc(SEND_VLEN, sizeof *s->siov);
  s->sname = calloc(SEND_VLEN, sizeof *s->sname);
  s->sp = calloc(s->shards, sizeof *s->sp);
  s->state_scratch = calloc(2 * (size_t)s->shards, sizeof(int32_t));
  if (s->too_large == NULL || s->rbuf == NULL || s->smsgs == NULL || s->siov == NULL || s->sname == NULL || s->sp == NULL || s->state_scratch == NULL) {
    finalize_socket(env, s, NULL); // closes the sockets
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  for (unsigned i = 0; i < RECV_VLEN; i++) {
    s->riov[i].iov_base = s->rbuf + (size_t)i * s->slot;
    s->riov[i].iov_len = s->slot;
    s->rmsgs[i].msg_hdr.msg_name = &s->rname[i];
    s->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
    s->rmsgs[i].msg_hdr.msg_iov = &s->riov[i];
    s->rmsgs[i].msg_hdr.msg_iovlen = 1;
  }

  napi_value resource, name;
  napi_create_object(env, &resource);
  napi_create_string_utf8(env, "SobaniUdpSocket", NAPI_AUTO_LENGTH, &name);
  if (napi_wrap(env, self, s, finalize_socket, NULL, NULL) != napi_ok) {
    finalize_socket(env, s, NULL); // closes the sockets
    napi_throw_error(env, NULL, "napi_wrap failed");
    return NULL;
  }
  // From here on the finalizer owns s. An untagged object is not usable: close it.
  if (!tag_wrapped(env, self, &UDP_SOCKET_TAG)) {
    close_socket_now(s);
    napi_throw_error(env, NULL, "napi_type_tag_object failed");
    return NULL;
  }
  napi_create_reference(env, self, 1, &s->wrapper_ref);
  napi_create_reference(env, on_batch_v, 1, &s->on_batch_ref);
  napi_create_reference(env, on_received_v, 1, &s->on_received_ref);
  napi_create_reference(env, state_v, 1, &s->state_ref);
  napi_create_reference(env, resource, 1, &s->resource_ref);
  if (napi_async_init(env, resource, name, &s->async_ctx) == napi_ok) s->async_live = 1;
  s->guard = add_poll_guard(env, close_socket_for_env, s);

  // Not polled until startReceiving(): until the tracker serves, datagrams wait in the kernel's buffer.
  uv_loop_t* loop = NULL;
  int e = napi_get_uv_event_loop(env, &loop) == napi_ok && loop != NULL ? 0 : UV_EINVAL;
  for (unsigned i = 0; i < s->endpoints && e == 0; i++) {
    uv_poll_t* poll = malloc(sizeof *poll);
    if (poll == NULL) { e = UV_ENOMEM; break; }
    if ((e = uv_poll_init(loop, poll, s->ep[i].fd)) != 0) { free(poll); break; }
    poll->data = &s->ep[i];
    s->poll[i] = poll;
  }
  if (e != 0) {
    close_from_js(env, s);
    return throw_errno(env, -e, "uv_poll_init", NULL, 0);
  }
  return self;
}

// address(i = 0): the bound address of endpoint i.
static napi_value Sock_address(napi_env env, napi_callback_info info) {
  udp_socket* s = unwrap_this(env, info);
  if (s == NULL) return NULL;
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double i = 0;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_undefined && (napi_get_value_double(env, argv[0], &i) != napi_ok || !(i >= 0 && i < s->endpoints) || i != (double)(unsigned)i)) {
    return throw_type_error(env, "address(i): i must be the index of one of the socket's endpoints");
  }
  if (s->closed) { napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "the socket is closed"); return NULL; }
  struct sockaddr_in6 a;
  socklen_t len = sizeof a;
  if (getsockname(s->ep[(unsigned)i].fd, (struct sockaddr*)&a, &len) != 0) return throw_errno(env, errno, "getsockname", NULL, 0);
  char text[ADDR_TEXT_MAX];
  if (a.sin6_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&a.sin6_addr)) {
    // node writes the bound address with uv_ip6_name, no "%zone"
    uv_inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
  } else {
    format_address((struct sockaddr*)&a, text);
  }
  return address_object(env, text, ntohs(a.sin6_port), a.sin6_family);
}

// { reason: count } of the non-zero counts.
static napi_value reasons_object(napi_env env, const uint64_t* counts) {
  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok) return NULL;
  for (int i = 0; i < R_COUNT; i++) {
    if (counts[i] > 0) set_named_double(env, obj, REASON_NAMES[i], (double)counts[i]);
  }
  return obj;
}

static napi_value Sock_stats(napi_env env, napi_callback_info info) {
  udp_socket* s = unwrap_this(env, info);
  if (s == NULL) return NULL;
  napi_value obj;
  NAPI_OK(napi_create_object(env, &obj));
  set_named_double(env, obj, "datagramsIn", (double)s->datagrams_in);
  set_named_double(env, obj, "bytesIn", (double)s->bytes_in);
  set_named_double(env, obj, "datagramsOut", (double)s->datagrams_out);
  set_named_double(env, obj, "bytesOut", (double)s->bytes_out);
  set_named_double(env, obj, "tooLarge", (double)s->too_large_count);
  set_named_double(env, obj, "shardBusy", (double)s->shard_busy);
  set_named_double(env, obj, "droppedAtStop", (double)s->dropped_at_stop);
  set_named_double(env, obj, "receivePasses", (double)s->receive_passes);
  set_named_double(env, obj, "recvCalls", (double)s->recv_calls);
  set_named_double(env, obj, "sendCalls", (double)s->send_calls);
  set_named_double(env, obj, "sendBlockedCalls", (double)s->send_blocked_calls);
  set_named_double(env, obj, "sendQueued", (double)s->send_queued);
  uint64_t depth = 0, bytes = 0;
  for (unsigned i = 0; i < s->endpoints; i++) {
    depth += s->ep[i].q.count;
    bytes += s->ep[i].q.payload_bytes;
  }
  set_named_double(env, obj, "sendQueueDepth", (double)depth);
  set_named_double(env, obj, "sendQueueBytes", (double)bytes);
  // what the kernel granted (it doubles the request and caps it at rmem_max / wmem_max); all endpoints ask the same
  int size = 0;
  socklen_t size_len = sizeof size;
  if (!s->closed && getsockopt(s->ep[0].fd, SOL_SOCKET, SO_RCVBUF, &size, &size_len) == 0) set_named_double(env, obj, "recvBufferSize", size);
  size_len = sizeof size;
  if (!s->closed && getsockopt(s->ep[0].fd, SOL_SOCKET, SO_SNDBUF, &size, &size_len) == 0) set_named_double(env, obj, "sendBufferSize", size);
  NAPI_OK(napi_set_named_property(env, obj, "sendErrors", reasons_object(env, s->send_errors)));
  NAPI_OK(napi_set_named_property(env, obj, "recvErrors", reasons_object(env, s->recv_errors)));
  return obj;
}

static napi_value Sock_startReceiving(napi_env env, napi_callback_info info) {
  udp_socket* s = unwrap_this(env, info);
  if (s == NULL) return NULL;
  if (s->closed) { napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "the socket is closed"); return NULL; }
  s->receiving = 1;
  int e = watch_all(s);
  if (e != 0) {
    s->receiving = 0;
    watch_all(s);
    return throw_errno(env, -e, "uv_poll_start", NULL, 0);
  }
  return NULL;
}

static napi_value Sock_stopReceiving(napi_env env, napi_callback_info info) {
  udp_socket* s = unwrap_this(env, info);
  if (s == NULL) return NULL;
  s->receiving = 0;
  watch_all(s);
  if (s->in_pass) cut_pass_short(s);
  return NULL;
}

static napi_value Sock_close(napi_env env, napi_callback_info info) {
  udp_socket* s = unwrap_this(env, info);
  if (s == NULL) return NULL;
  close_from_js(env, s);
  return NULL;
}

// addressBucket(text): the routing bucket of address text, as the receive path
// computes it (bucket_of_text). Address text is 8-bit (dgram's rinfo.address is
// ASCII): a string with a code unit above 255 is a TypeError, not a guess.
static napi_value AddressBucket(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf16(env, argv[0], NULL, 0, &len) != napi_ok) return throw_type_error(env, "addressBucket(text): text must be a string");
  char16_t stack16[128];
  char stack8[128];
  char16_t* wide = len < 128 ? stack16 : malloc((len + 1) * sizeof(char16_t));
  char* text = len < 128 ? stack8 : malloc(len + 1);
  napi_value v = NULL;
  size_t got = 0;
  if (wide == NULL || text == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
  } else if (napi_get_value_string_utf16(env, argv[0], wide, len + 1, &got) == napi_ok) {
    size_t i = 0;
    while (i < got && wide[i] <= 0xff) { text[i] = (char)wide[i]; i++; }
    if (i < got) throw_type_error(env, "addressBucket(text): address text is 8-bit, this string has a character above U+00FF");
    else napi_create_uint32(env, bucket_of_text(text, (int)got), &v);
  }
  if (wide != stack16) free(wide);
  if (text != stack8) free(text);
  return v;
}

// Test-only: formatSockaddr(bytes of a sockaddr_in or sockaddr_in6) -> [address
// text, bucket], exactly as the receive path makes them (format_address, then
// bucket_of_text), or null for another family. test/native-socket.test.ts fuzzes
// it against uv_inet_ntop and routing.ts.
static napi_value FormatSockaddr(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t* bytes;
  size_t len;
  if (argc < 1 || !get_bytes(env, argv[0], &bytes, &len) || len < sizeof(struct sockaddr_in) || len > sizeof(struct sockaddr_in6)) {
    return throw_type_error(env, "formatSockaddr(bytes): bytes must hold a sockaddr_in (16) or sockaddr_in6 (28)");
  }
  struct sockaddr_in6 sa;
  memset(&sa, 0, sizeof sa);
  memcpy(&sa, bytes, len);
  char text[ADDR_TEXT_MAX];
  int n = format_address((const struct sockaddr*)&sa, text);
  napi_value result, t, b;
  if (n < 0) { NAPI_OK(napi_get_null(env, &result)); return result; }
  NAPI_OK(napi_create_array_with_length(env, 2, &result));
  NAPI_OK(napi_create_string_latin1(env, text, (size_t)n, &t));
  NAPI_OK(napi_create_uint32(env, bucket_of_text(text, n), &b));
  NAPI_OK(napi_set_element(env, result, 0, t));
  NAPI_OK(napi_set_element(env, result, 1, b));
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
    { "address", NULL, Sock_address, NULL, NULL, NULL, napi_default_method, NULL },
    { "sendReplies", NULL, Sock_sendReplies, NULL, NULL, NULL, napi_default_method, NULL },
    { "stats", NULL, Sock_stats, NULL, NULL, NULL, napi_default_method, NULL },
    { "startReceiving", NULL, Sock_startReceiving, NULL, NULL, NULL, napi_default_method, NULL },
    { "stopReceiving", NULL, Sock_stopReceiving, NULL, NULL, NULL, napi_default_method, NULL },
    { "close", NULL, Sock_close, NULL, NULL, NULL, napi_default_method, NULL },
  };
  napi_value cls, fn, peer_bytes;
  NAPI_OK(napi_define_class(env, "UdpSocket", NAPI_AUTO_LENGTH, Sock_new, NULL, sizeof methods / sizeof methods[0], methods, &cls));
  NAPI_OK(napi_set_named_property(env, exports, "UdpSocket", cls));
  NAPI_OK(napi_create_function(env, "addressBucket", NAPI_AUTO_LENGTH, AddressBucket, NULL, &fn));
  NAPI_OK(napi_set_named_property(env, exports, "addressBucket", fn));
  NAPI_OK(napi_create_function(env, "formatSockaddr", NAPI_AUTO_LENGTH, FormatSockaddr, NULL, &fn));
  NAPI_OK(napi_set_named_property(env, exports, "formatSockaddr", fn));
  NAPI_OK(napi_create_uint32(env, PEER_BYTES, &peer_bytes));
  NAPI_OK(napi_set_named_property(env, exports, "PEER_BYTES", peer_bytes));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
