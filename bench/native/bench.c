// sobani_bench: native helpers for the benchmark, never used by the tracker.
//
// 1. EchoServer: receives with recvmmsg and sends every datagram back to its
//    source with sendmmsg, watched by a uv_poll_t on the main thread's loop. No
//    JS runs per datagram: it is the kernel's ceiling for one socket and core.
//
// 2. runLoad(spec): a UDP load generator on its own pthread, so JS is never
//    blocked. Every simulated client has its own source IP, but they share one
//    socket (a few if one cannot buffer enough): the source address is chosen
//    per datagram (IP_PKTINFO), so one sendmmsg sends the requests of many
//    clients and one recvmmsg reads their replies, each told apart by the
//    address it was sent to. See "Load generator" below for why. It mirrors
//    bench/loadgen/worker.ts: replies are matched to requests by order per
//    client, latency goes into a histogram with the bucket layout of
//    bench/histogram.ts (nanoseconds), and only the measurement window counts.
//    The promise is settled on the main thread through a threadsafe function.
#define NAPI_VERSION 8
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// NAPI_OK, throw_type_error, set_named_*, make_errno_error, get_opt*, get_bytes...
// shared with the tracker's addon (src/io/native/udp.c)
#include "../../src/io/native/napi-helpers.h"

// ---- helpers ------------------------------------------------------------------------

// Copies a Buffer / Uint8Array (any 8-bit TypedArray) / ArrayBuffer into malloc'd memory.
static int get_bytes_copy(napi_env env, napi_value v, uint8_t** out, size_t* out_len) {
  bool is = false;
  uint8_t* data;
  size_t len;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    if (napi_get_typedarray_info(env, v, &type, NULL, NULL, NULL, NULL) != napi_ok) return 0;
    if (type != napi_uint8_array && type != napi_int8_array && type != napi_uint8_clamped_array) return 0;
  } else if (napi_is_arraybuffer(env, v, &is) != napi_ok || !is) {
    return 0;
  }
  if (!get_bytes(env, v, &data, &len)) return 0;
  *out = malloc(len > 0 ? len : 1);
  if (*out == NULL) return 0;
  if (len > 0) memcpy(*out, data, len);
  *out_len = len;
  return 1;
}

// An IP literal and port as a sockaddr. Returns the family, or 0.
static int parse_ip(const char* text, unsigned port, struct sockaddr_in6* out, socklen_t* len) {
  memset(out, 0, sizeof *out);
  struct sockaddr_in* s4 = (struct sockaddr_in*)out;
  if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(struct sockaddr_in);
    return AF_INET;
  }
  if (inet_pton(AF_INET6, text, &out->sin6_addr) == 1) {
    out->sin6_family = AF_INET6;
    out->sin6_port = htons((uint16_t)port);
    *len = sizeof(struct sockaddr_in6);
    return AF_INET6;
  }
  return 0;
}

static inline uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// Wall-clock ms since the epoch, as Date.now(): lets JS line other samples up with the window.
static double epoch_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double thread_cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// ==== EchoServer =========================================================================

#define ECHO_VLEN 64
#define ECHO_SLOT 2048
#define ECHO_ROUNDS 16

typedef struct {
  napi_ref wrapper_ref;
  uv_poll_t* poll;
  int fd;
  int closed;
  poll_guard* guard; // closes the poll if the environment goes away first (napi-helpers.h)
  struct mmsghdr msgs[ECHO_VLEN];
  struct iovec iov[ECHO_VLEN];
  struct sockaddr_in6 names[ECHO_VLEN];
  uint8_t* bufs;
  uint64_t received, echoed, send_errors;
} echo_server;

// Tags every EchoServer object (the tracker's UdpSocket has a tag of its own).
static const napi_type_tag ECHO_SERVER_TAG = { 0x736f62616e696563ULL, 0x686f736572766572ULL };

static void echo_close_now(echo_server* e) {
  if (e->closed) return;
  e->closed = 1;
  close_polls(e->guard, &e->poll, 1);
  e->guard = NULL;
  if (e->fd >= 0) { close(e->fd); e->fd = -1; }
}

static void echo_close_for_env(void* owner) { echo_close_now(owner); }

static void echo_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  echo_server* e = data;
  echo_close_now(e);
  if (e->wrapper_ref != NULL) napi_delete_reference(env, e->wrapper_ref);
  free(e->bufs);
  free(e);
}

static void echo_on_poll(uv_poll_t* h, int status, int events) {
  (void)events;
  echo_server* e = h->data;
  if (e->closed) return;
  if (status < 0) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    uv_poll_start(e->poll, UV_READABLE, echo_on_poll);
    return;
  }
  for (int round = 0; round < ECHO_ROUNDS; round++) {
    for (int i = 0; i < ECHO_VLEN; i++) {
      e->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
      e->iov[i].iov_len = ECHO_SLOT;
    }
    int r = recvmmsg(e->fd, e->msgs, ECHO_VLEN, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (r == 0) break;
    e->received += (uint64_t)r;
    for (int i = 0; i < r; i++) e->iov[i].iov_len = e->msgs[i].msg_len;
    int sent = 0;
    while (sent < r) {
      int k = sendmmsg(e->fd, e->msgs + sent, (unsigned)(r - sent), MSG_DONTWAIT);
      if (k < 0) {
        if (errno == EINTR) continue;
        e->send_errors++;
        sent++;
        continue;
      }
      if (k == 0) break;
      e->echoed += (uint64_t)k;
      sent += k;
    }
    if (r < ECHO_VLEN) break;
  }
}

static napi_value Echo_new(napi_env env, napi_callback_info info) {
  napi_value self;
  napi_value opts = constructor_options(env, info, "EchoServer", &self);
  if (opts == NULL) return NULL;
  char host[64] = "127.0.0.1";
  if (get_opt_string(env, opts, "host", host, sizeof host) < 0) return throw_type_error(env, "host must be a string");
  double port, rcvbuf, sndbuf;
  if (!get_opt_number(env, opts, "port", 0, 0, 65535, &port)) return NULL;
  if (!get_opt_number(env, opts, "recvBufferSize", 0, 0, 2147483647.0, &rcvbuf)) return NULL;
  if (!get_opt_number(env, opts, "sendBufferSize", 0, 0, 2147483647.0, &sndbuf)) return NULL;
  struct sockaddr_in6 addr;
  socklen_t addr_len;
  int family = parse_ip(host, (unsigned)port, &addr, &addr_len);
  if (family == 0) return throw_type_error(env, "host must be an IP address literal");
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { napi_throw(env, make_errno_error(env, errno, "socket", NULL)); return NULL; }
  if (family == AF_INET6) {
    int off = 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) {
      int err = errno;
      close(fd);
      napi_throw(env, make_errno_error(env, err, "setsockopt IPV6_V6ONLY", NULL));
      return NULL;
    }
  }
  int b = (int)rcvbuf;
  if (b > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  b = (int)sndbuf;
  if (b > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
  if (bind(fd, (struct sockaddr*)&addr, addr_len) != 0) {
    int err = errno;
    close(fd);
    char detail[96];
    snprintf(detail, sizeof detail, "%s:%d", host, (int)port);
    napi_throw(env, make_errno_error(env, err, "bind", detail));
    return NULL;
  }
  echo_server* e = calloc(1, sizeof *e);
  uv_loop_t* loop = NULL;
  if (e == NULL || (e->bufs = malloc((size_t)ECHO_VLEN * ECHO_SLOT)) == NULL || (e->poll = malloc(sizeof *e->poll)) == NULL) {
    close(fd);
    if (e != NULL) { free(e->bufs); free(e); }
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  e->fd = fd;
  for (int i = 0; i < ECHO_VLEN; i++) {
    e->iov[i].iov_base = e->bufs + (size_t)i * ECHO_SLOT;
    e->iov[i].iov_len = ECHO_SLOT;
    e->msgs[i].msg_hdr.msg_name = &e->names[i];
    e->msgs[i].msg_hdr.msg_iov = &e->iov[i];
    e->msgs[i].msg_hdr.msg_iovlen = 1;
  }
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, e->poll, fd) != 0) {
    close(fd);
    free(e->poll);
    free(e->bufs);
    free(e);
    napi_throw_error(env, NULL, "uv_poll_init failed");
    return NULL;
  }
  e->poll->data = e;
  if (napi_wrap(env, self, e, echo_finalize, NULL, NULL) != napi_ok) {
    echo_close_now(e);
    napi_throw_error(env, NULL, "napi_wrap failed");
    return NULL;
  }
  if (!tag_wrapped(env, self, &ECHO_SERVER_TAG)) {
    echo_close_now(e); // the finalizer frees it
    napi_throw_error(env, NULL, "napi_type_tag_object failed");
    return NULL;
  }
  napi_create_reference(env, self, 1, &e->wrapper_ref); // alive while open
  e->guard = add_poll_guard(env, echo_close_for_env, e);
  uv_poll_start(e->poll, UV_READABLE, echo_on_poll);
  return self;
}

static echo_server* echo_this(napi_env env, napi_callback_info info) {
  return get_wrapped_this(env, info, &ECHO_SERVER_TAG, "not an EchoServer");
}

static napi_value Echo_address(napi_env env, napi_callback_info info) {
  echo_server* e = echo_this(env, info);
  if (e == NULL) return NULL;
  if (e->closed) { napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "the echo server is closed"); return NULL; }
  struct sockaddr_in6 a;
  socklen_t len = sizeof a;
  if (getsockname(e->fd, (struct sockaddr*)&a, &len) != 0) { napi_throw(env, make_errno_error(env, errno, "getsockname", NULL)); return NULL; }
  char text[64];
  if (a.sin6_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in*)&a)->sin_addr, text, sizeof text);
  else uv_inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
  return address_object(env, text, ntohs(a.sin6_port), a.sin6_family);
}

static napi_value Echo_stats(napi_env env, napi_callback_info info) {
  echo_server* e = echo_this(env, info);
  if (e == NULL) return NULL;
  napi_value obj;
  NAPI_OK(napi_create_object(env, &obj));
  set_named_double(env, obj, "received", (double)e->received);
  set_named_double(env, obj, "echoed", (double)e->echoed);
  set_named_double(env, obj, "sendErrors", (double)e->send_errors);
  return obj;
}

static napi_value Echo_close(napi_env env, napi_callback_info info) {
  echo_server* e = echo_this(env, info);
  if (e == NULL) return NULL;
  echo_close_now(e);
  if (e->wrapper_ref != NULL) { napi_delete_reference(env, e->wrapper_ref); e->wrapper_ref = NULL; }
  return NULL;
}

// ==== Load generator =======================================================================
//
// The kernel's work per datagram is a floor the generator cannot lower (on
// loopback, sending one also runs the server's receive path and wakes it, on
// the sender's CPU time). What it can save is everything around that: a syscall
// per request, a wake-up per reply, thousands of sockets. So:
// - All clients share a few sockets bound to the wildcard address on one port.
//   Each request carries its client's source address in an IP_PKTINFO
//   (IPV6_PKTINFO) control message, so one sendmmsg sends requests of many
//   clients and the server still sees one IP per client (on loopback any 127/8
//   address is local). Every client has the same source port.
// - A reply belongs to the client whose address it was sent to: the destination
//   address, read from the same control message on recvmmsg, looked up in a hash
//   table. One recvmmsg reads replies of many clients.
// - In the open loop every reply carries the kernel's arrival timestamp
//   (SO_TIMESTAMPNS), so reading it late costs no accuracy: the loop only wakes
//   up when the next request is due, sends all that are due in one sendmmsg and
//   reads the replies that arrived meanwhile; it does not wake per reply. The
//   closed loop has to read a reply to send the next request, so it still
//   wakes per reply (batch), and the time it reads one is its arrival time.
// Per client the state is the same as with a socket each: a ring of send times,
// matched by order, and the count in flight.

// bench/histogram.ts: values 0..255 exact, then 128 sub-buckets per power of two up to 2^48.
#define HIST_SUB_BITS 7
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_LINEAR (HIST_SUB * 2)
#define HIST_MAX_EXP 48
#define HIST_BUCKETS (HIST_LINEAR + (HIST_MAX_EXP - HIST_SUB_BITS) * HIST_SUB)

static inline unsigned hist_index(uint64_t v) {
  if (v < HIST_LINEAR) return (unsigned)v;
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - HIST_SUB_BITS;
  uint64_t mantissa = v >> shift; // in [SUB, 2*SUB)
  uint64_t index = HIST_LINEAR + (uint64_t)(shift - 1) * HIST_SUB + (mantissa - HIST_SUB);
  return index < HIST_BUCKETS ? (unsigned)index : HIST_BUCKETS - 1;
}

#define LOAD_RVLEN 256 // replies per recvmmsg
#define LOAD_SVLEN 256 // requests per sendmmsg
#define LOAD_SLOT 2048 // bytes kept of a reply: the markers are near its start
#define LOAD_RCTRL 128 // control bytes per reply: pktinfo and timestamp
#define SETUP_BURST 64
// Receive buffer to set aside per datagram in flight: a small datagram takes
// ~0.8 KB of it on loopback (the kernel counts the skb, not the payload), a
// tracker reply of a few hundred bytes more. When one socket cannot get enough
// (SO_RCVBUF is capped by net.core.rmem_max unless we may force it), the
// clients are spread over more sockets, so a burst of replies is never dropped
// by the generator.
#define BUFFER_PER_DATAGRAM 2048
#define MAX_SOCKETS 32
// How late a timed wake-up may be (the kernel's default, set so it is not
// inherited from elsewhere). In the open loop it bounds how long a due request
// waits for the next batch, and that wait counts in its latency (measured from
// the scheduled time). A smaller slack means more, smaller batches, and every
// wake-up costs: on the 2-core KVM guest this was tuned on, a timed wake-up
// costs ~15-20 us of CPU and each batch wakes the server too. At 200 k/s against
// the native echo: 50 us slack -> ~0.6 core, requests sent ~30 us late on
// average; 20 us -> ~0.7 core, ~23 us late; 10 us -> ~0.85 core.
#define TIMER_SLACK_NS 50000

static const char ANNOUNCE[] = "{\"action\":\"announce\",\"pad\":\"xxxxxxxxxxxxxxxxxx\"}";
static const char ANNOUNCE_TOKEN[] = "{\"action\":\"announce\",\"token\":true,\"pad\":\"xxxxxxxxxxxxxxxxxx\"}";
static const char SHARE_ID_KEY[] = "\"shareId\":\"";
static const char TOKEN_KEY[] = "\"token\":\"";
static const char PULSE_RECEIVED[] = "pulseReceived";
static const char STATUS_OK[] = "\"status\":\"0\"";

typedef struct {
  // spec
  struct sockaddr_in6 server;
  socklen_t server_len;
  int family;
  int nsrc;
  struct sockaddr_in6* src;
  socklen_t src_len;
  size_t addr_len;          // bytes of an address: 4 or 16
  int32_t* by_addr;         // open addressing: client index by source address, -1 empty
  uint32_t by_addr_mask;
  uint32_t window;
  double rate;
  double warmup_ms, measure_ms, drain_ms, timeout_ms;
  int setup_tracker;        // 0: none; 1: announce, prove with the shareId; 2: announce for a token, then pulse with it
  uint8_t* request;
  size_t request_len;
  uint8_t* reply_marker;
  size_t reply_marker_len;
  uint8_t* unknown_marker; // NULL: none
  size_t unknown_marker_len;
  // settling the promise
  napi_deferred deferred;
  napi_threadsafe_function tsfn;
  // result
  int error;
  const char* error_syscall;
  char error_detail[128];
  int active;
  double sent, sent_in_window, replies_in_window, answered_in_window, never_sent, timed_out, other;
  double unknown_session, send_errors, announce_failed, proof_failed, cpu_seconds;
  double window_start_ms, window_end_ms; // epoch ms of the measurement window's edges
  int fell_behind;
  double* hist;
} load_job;

// The bytes of an address that tell its client apart: the IPv4 or IPv6 address.
static inline const uint8_t* addr_bytes(const load_job* j, const struct sockaddr_in6* a) {
  return j->family == AF_INET ? (const uint8_t*)&((const struct sockaddr_in*)a)->sin_addr : a->sin6_addr.s6_addr;
}

static inline uint32_t addr_hash(const uint8_t* p, size_t len) {
  uint32_t h = 2166136261u; // FNV-1a
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

// The slot of address p in j->by_addr: its client's, or the empty one where it would go.
static inline uint32_t addr_slot(const load_job* j, const uint8_t* p) {
  uint32_t i = addr_hash(p, j->addr_len) & j->by_addr_mask;
  while (j->by_addr[i] >= 0 && memcmp(addr_bytes(j, &j->src[j->by_addr[i]]), p, j->addr_len) != 0) i = (i + 1) & j->by_addr_mask;
  return i;
}

enum { ST_ANNOUNCE = 0, ST_PROVE = 1, ST_LOAD = 2, ST_FAILED = 3 };

typedef struct {
  uint8_t stage;
  uint32_t outstanding;     // requests sent or queued, not yet answered
  uint64_t last_progress;
  uint32_t head, tail;      // ring of send times, oldest at tail
  uint8_t proof_len;
  char proof[112];
} client;

// A datagram waiting for the next sendmmsg.
typedef struct {
  const void* data;
  uint32_t len;
  uint32_t client;
  uint64_t at;              // a request: its scheduled send time (open loop), or 0: when it goes out
  int request;              // 0: a set-up datagram, nothing to account for
} queued;

typedef struct {
  load_job* j;
  client* c;
  int n;
  uint64_t* ring;
  uint32_t ring_size, ring_mask;
  int nfd;
  int fd[MAX_SOCKETS];      // client i sends and receives on fd[i % nfd]
  // receiving
  uint8_t* rbuf;
  uint8_t* rctrl;
  struct mmsghdr rmsgs[LOAD_RVLEN];
  struct iovec riov[LOAD_RVLEN];
  struct sockaddr_in6 rnames[LOAD_RVLEN];
  // sending
  queued q[LOAD_SVLEN], by_fd[LOAD_SVLEN];
  int nq;
  struct mmsghdr smsgs[LOAD_SVLEN];
  struct iovec siov[LOAD_SVLEN];
  union { struct cmsghdr align; uint8_t b[CMSG_SPACE(sizeof(struct in6_pktinfo))]; } sctrl[LOAD_SVLEN];
  uint8_t* ssrc[LOAD_SVLEN]; // where the source address goes in sctrl[i]
  // open loop: requests are due at t0 + k / per_ns; `scheduled` of them are taken care of
  uint32_t* idle;           // clients with no request in flight
  int idle_n;
  uint64_t t0, scheduled, burst_cap;
  double per_ns;
  int open_loop;
  int sending;
  int pending_setup;
  uint64_t from, until;     // measurement window, CLOCK_MONOTONIC ns
} gen;

static inline int in_window(const gen* g, uint64_t t) { return t >= g->from && t < g->until; }

static inline uint64_t* ring_at(gen* g, client* c, uint32_t k) { return &g->ring[(size_t)(c - g->c) * g->ring_size + (k & g->ring_mask)]; }

// ---- sending ----

// Accounts for one queued datagram once sendmmsg has taken it (ok) or refused it.
static void on_sent(gen* g, const queued* q, int ok, uint64_t now) {
  load_job* j = g->j;
  if (!q->request) return; // a lost set-up datagram is retried by the next round
  client* c = &g->c[q->client];
  if (!ok) {
    j->send_errors++;
    c->outstanding--; // closed loop: a later reply or the sweep refills it
    if (g->open_loop) g->idle[g->idle_n++] = q->client;
    return;
  }
  uint64_t at = q->at != 0 ? q->at : now;
  if (c->head - c->tail >= g->ring_size) c->tail++; // cannot happen: the oldest is forgotten
  *ring_at(g, c, c->head++) = at;
  j->sent++;
  if (in_window(g, at)) j->sent_in_window++;
  if (g->open_loop) c->last_progress = now;
}

// Sends every queued datagram: one sendmmsg per socket (usually there is one).
static void flush(gen* g) {
  if (g->nq == 0) return;
  load_job* j = g->j;
  const queued* q = g->q;
  if (g->nfd > 1) {
    // grouped by socket, in queue order within each: a client's requests keep their order
    int start[MAX_SOCKETS + 1] = { 0 };
    for (int i = 0; i < g->nq; i++) start[g->q[i].client % g->nfd + 1]++;
    for (int s = 0; s < g->nfd; s++) start[s + 1] += start[s];
    for (int i = 0; i < g->nq; i++) g->by_fd[start[g->q[i].client % g->nfd]++] = g->q[i];
    q = g->by_fd;
  }
  for (int i = 0; i < g->nq; i++) {
    g->siov[i].iov_base = (void*)q[i].data;
    g->siov[i].iov_len = q[i].len;
    memcpy(g->ssrc[i], addr_bytes(j, &j->src[q[i].client]), j->addr_len);
  }
  uint64_t now = mono_ns();
  for (int i = 0; i < g->nq;) {
    int fd_index = (int)(q[i].client % (uint32_t)g->nfd);
    int run = 1;
    while (i + run < g->nq && (int)(q[i + run].client % (uint32_t)g->nfd) == fd_index) run++;
    int r = sendmmsg(g->fd[fd_index], g->smsgs + i, (unsigned)run, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { on_sent(g, &q[i++], 0, now); continue; } // this one fails: skip it, send the rest
    for (int k = 0; k < r; k++) on_sent(g, &q[i + k], 1, now);
    i += r;
  }
  g->nq = 0;
}

static void queue_datagram(gen* g, client* c, const void* data, size_t len, int request, uint64_t at) {
  if (g->nq == LOAD_SVLEN) flush(g);
  g->q[g->nq++] = (queued){ .data = data, .len = (uint32_t)len, .client = (uint32_t)(c - g->c), .at = at, .request = request };
  if (request) c->outstanding++;
}

static void refill(gen* g, client* c) {
  load_job* j = g->j;
  if (!g->sending || c->stage != ST_LOAD) return;
  while (c->outstanding < j->window) {
    // a token client's load is its own token pulse (the one it proved with)
    if (j->setup_tracker == 2) queue_datagram(g, c, c->proof, c->proof_len, 1, 0);
    else queue_datagram(g, c, j->request, j->request_len, 1, 0);
  }
}

static void queue_setup(gen* g, client* c) {
  if (c->stage == ST_ANNOUNCE && g->j->setup_tracker == 2) queue_datagram(g, c, ANNOUNCE_TOKEN, sizeof ANNOUNCE_TOKEN - 1, 0, 0);
  else if (c->stage == ST_ANNOUNCE) queue_datagram(g, c, ANNOUNCE, sizeof ANNOUNCE - 1, 0, 0);
  else if (c->stage == ST_PROVE) queue_datagram(g, c, c->proof, c->proof_len, 0, 0);
}

// Open loop: every request due by now goes out, each on an idle client, in one
// sendmmsg. Returns 1 if some are still due: every client was waiting for a reply.
static int send_due(gen* g) {
  load_job* j = g->j;
  uint64_t due = (uint64_t)((double)(mono_ns() - g->t0) * g->per_ns);
  if (due > g->scheduled + g->burst_cap) j->fell_behind = 1;
  while (g->scheduled < due && g->idle_n > 0) {
    client* c = &g->c[g->idle[--g->idle_n]];
    // timed from its scheduled send time: a server stall is not hidden (no coordinated omission)
    uint64_t at = g->t0 + (uint64_t)((double)g->scheduled / g->per_ns);
    g->scheduled++;
    if (j->setup_tracker == 2) queue_datagram(g, c, c->proof, c->proof_len, 1, at);
    else queue_datagram(g, c, j->request, j->request_len, 1, at);
  }
  flush(g);
  return g->scheduled < due;
}

// ---- receiving ----

// The string value that follows `key` (which ends with its opening quote) in msg: its
// start, and its length in *n (1..max); NULL when there is none.
static const uint8_t* string_after(const uint8_t* msg, size_t len, const char* key, size_t key_len, int max, int* n) {
  const uint8_t* p = memmem(msg, len, key, key_len);
  if (p == NULL) return NULL;
  const uint8_t* v = p + key_len;
  const uint8_t* end = memchr(v, '"', len - (size_t)(v - msg));
  if (end == NULL || end == v || end - v > max) return NULL;
  *n = (int)(end - v);
  return v;
}

static void on_setup_reply(gen* g, client* c, const uint8_t* msg, size_t len) {
  if (c->stage == ST_ANNOUNCE) {
    // A token client proves with its token (the announce reply carries it, beside the
    // shareId); the others with their shareId: either way a pulse, sent at once.
    int token = g->j->setup_tracker == 2, n = 0;
    const uint8_t* v = token ? string_after(msg, len, TOKEN_KEY, sizeof TOKEN_KEY - 1, 80, &n)
                             : string_after(msg, len, SHARE_ID_KEY, sizeof SHARE_ID_KEY - 1, 64, &n);
    if (v == NULL) return;
    c->proof_len = (uint8_t)snprintf(c->proof, sizeof c->proof, "{\"action\":\"pulse\",\"%s\":\"%.*s\"}", token ? "token" : "shareId", n, (const char*)v);
    c->stage = ST_PROVE;
    queue_setup(g, c); // prove at once: no need to wait for the next round
  } else if (c->stage == ST_PROVE) {
    if (memmem(msg, len, PULSE_RECEIVED, sizeof PULSE_RECEIVED - 1) != NULL && memmem(msg, len, STATUS_OK, sizeof STATUS_OK - 1) != NULL) {
      c->stage = ST_LOAD;
      g->pending_setup--;
    }
  }
}

// A reply that arrived at `at` (CLOCK_MONOTONIC ns).
static void on_reply(gen* g, client* c, const uint8_t* msg, size_t len, uint64_t at) {
  load_job* j = g->j;
  if (memmem(msg, len, j->reply_marker, j->reply_marker_len) == NULL) {
    j->other++; // e.g. a late setup reply
    return;
  }
  if (j->unknown_marker != NULL && memmem(msg, len, j->unknown_marker, j->unknown_marker_len) != NULL) j->unknown_session++;
  if (in_window(g, at)) j->replies_in_window++;
  if (c->head != c->tail) {
    uint64_t sent_at = *ring_at(g, c, c->tail++);
    if (in_window(g, sent_at)) {
      j->answered_in_window++;
      j->hist[hist_index(at > sent_at ? at - sent_at : 0)] += 1;
    }
  }
  if ((int64_t)(at - c->last_progress) > 0) c->last_progress = at;
  if (c->outstanding > 0) {
    c->outstanding--;
    if (g->open_loop && c->outstanding == 0) g->idle[g->idle_n++] = (uint32_t)(c - g->c);
  }
  if (!g->open_loop) refill(g, c);
}

// Queued ICMP errors (IP_RECVERR), e.g. port unreachable while the server is not
// there: each is a request that failed. Returns how many there were.
static int read_errors(int fd) {
  uint8_t buf[64], ctrl[256];
  int n = 0;
  for (;;) {
    struct iovec iov = { buf, sizeof buf };
    struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl };
    if (recvmsg(fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
      if (errno == EINTR) continue;
      return n;
    }
    n++;
  }
}

static inline int from_server(const load_job* j, const struct sockaddr_in6* a) {
  if (j->family == AF_INET) {
    const struct sockaddr_in *x = (const struct sockaddr_in*)a, *s = (const struct sockaddr_in*)&j->server;
    return x->sin_port == s->sin_port && x->sin_addr.s_addr == s->sin_addr.s_addr;
  }
  return a->sin6_port == j->server.sin6_port && memcmp(&a->sin6_addr, &j->server.sin6_addr, 16) == 0;
}

// Reads every datagram waiting on socket s, hands each to its client, and sends
// what that queued (closed-loop refills, proofs) after each batch.
static void read_socket(gen* g, int s) {
  load_job* j = g->j;
  int fd = g->fd[s];
  for (;;) {
    for (int i = 0; i < LOAD_RVLEN; i++) {
      g->rmsgs[i].msg_hdr.msg_namelen = sizeof g->rnames[i];
      g->rmsgs[i].msg_hdr.msg_controllen = LOAD_RCTRL;
    }
    int r = recvmmsg(fd, g->rmsgs, LOAD_RVLEN, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      // an ICMP error is reported once here, and queued one per failed request
      int n = read_errors(fd);
      j->send_errors += n > 0 ? n : 1;
      if (n > 0) continue;
      break;
    }
    if (r == 0) break;
    // Arrival time: the kernel's timestamp in the open loop, else now. Kernel
    // timestamps are CLOCK_REALTIME: taken back to CLOCK_MONOTONIC with the
    // offset between the two now (they only differ by steps of the clock).
    uint64_t now = mono_ns();
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t real_minus_mono = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec - (int64_t)now;
    for (int i = 0; i < r; i++) {
      struct msghdr* h = &g->rmsgs[i].msg_hdr;
      if (!from_server(j, &g->rnames[i])) continue; // a connected socket would not have seen it
      uint8_t dst[16];
      int have_dst = 0;
      uint64_t at = now;
      for (struct cmsghdr* cm = CMSG_FIRSTHDR(h); cm != NULL; cm = CMSG_NXTHDR(h, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
          struct timespec ts;
          memcpy(&ts, CMSG_DATA(cm), sizeof ts);
          int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - real_minus_mono;
          if (t > 0 && (uint64_t)t < now) at = (uint64_t)t;
        } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
          struct in_pktinfo pi;
          memcpy(&pi, CMSG_DATA(cm), sizeof pi);
          memcpy(dst, &pi.ipi_addr, 4); // the reply's destination: its client's address
          have_dst = 1;
        } else if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
          struct in6_pktinfo pi;
          memcpy(&pi, CMSG_DATA(cm), sizeof pi);
          memcpy(dst, &pi.ipi6_addr, 16);
          have_dst = 1;
        }
      }
      int32_t ci = have_dst ? j->by_addr[addr_slot(j, dst)] : -1;
      if (ci < 0) { j->other++; continue; }
      client* c = &g->c[ci];
      const uint8_t* msg = g->riov[i].iov_base;
      size_t len = g->rmsgs[i].msg_len;
      if (c->stage == ST_LOAD) on_reply(g, c, msg, len, at);
      else if (c->stage != ST_FAILED) on_setup_reply(g, c, msg, len);
      else j->other++;
    }
    flush(g);
    if (r < LOAD_RVLEN) break;
  }
}

static void read_all(gen* g) {
  for (int s = 0; s < g->nfd; s++) read_socket(g, s);
}

// Sleeps until `deadline` (CLOCK_MONOTONIC ns), or until a reply arrives when
// `wake_on_reply`, and reads what is there if woken by it.
static void wait_for(gen* g, uint64_t deadline, int wake_on_reply) {
  struct pollfd p[MAX_SOCKETS];
  for (int s = 0; s < g->nfd; s++) p[s] = (struct pollfd){ .fd = g->fd[s], .events = wake_on_reply ? POLLIN : 0 };
  int64_t ns = (int64_t)(deadline - mono_ns());
  if (ns < 0) ns = 0;
  struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
  if (ppoll(p, (nfds_t)g->nfd, &ts, NULL) <= 0) return;
  for (int s = 0; s < g->nfd; s++) {
    if (p[s].revents & POLLERR) g->j->send_errors += read_errors(g->fd[s]);
    // also on POLLERR alone: if an error could not be queued, recvmmsg reports (and clears) it
    if (p[s].revents & (POLLIN | POLLERR)) read_socket(g, s);
  }
}

// ---- the run ----

static void sweep(gen* g, uint64_t now) {
  load_job* j = g->j;
  int64_t timeout = (int64_t)(j->timeout_ms * 1e6);
  for (int i = 0; i < g->n; i++) {
    client* c = &g->c[i];
    if (c->stage != ST_LOAD) continue;
    if (c->outstanding > 0 && (int64_t)(now - c->last_progress) > timeout) {
      j->timed_out += c->outstanding;
      c->outstanding = 0;
      c->tail = c->head;
      c->last_progress = now;
      if (g->open_loop) g->idle[g->idle_n++] = (uint32_t)i;
    }
    if (!g->open_loop) refill(g, c); // also restarts a client whose sends failed
  }
  flush(g);
}

// Set-up 'tracker': announce, take the shareId, prove with a pulse carrying it.
static void run_setup(gen* g) {
  uint64_t start = mono_ns();
  uint64_t deadline = start + 5000000000ull, next_round = start, next_burst = start;
  int cursor = g->n;
  g->pending_setup = g->n;
  while (g->pending_setup > 0) {
    uint64_t now = mono_ns();
    if (now >= deadline) break;
    if (now >= next_round) { cursor = 0; next_round = now + 500000000ull; }
    if (cursor < g->n && now >= next_burst) {
      // in bursts: thousands at once would overflow the server's receive buffer
      for (int sent = 0; cursor < g->n && sent < SETUP_BURST; cursor++) {
        client* c = &g->c[cursor];
        if (c->stage == ST_ANNOUNCE || c->stage == ST_PROVE) { queue_setup(g, c); sent++; }
      }
      flush(g);
      next_burst = now + 2000000ull;
    }
    uint64_t until = next_round < deadline ? next_round : deadline;
    if (cursor < g->n && next_burst < until) until = next_burst;
    wait_for(g, until, 1);
  }
  for (int i = 0; i < g->n; i++) {
    client* c = &g->c[i];
    if (c->stage == ST_ANNOUNCE) { g->j->announce_failed++; c->stage = ST_FAILED; }
    else if (c->stage == ST_PROVE) { g->j->proof_failed++; c->stage = ST_FAILED; }
  }
}

static inline uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static void run_load(gen* g) {
  load_job* j = g->j;
  uint64_t t0 = mono_ns();
  g->from = t0 + (uint64_t)(j->warmup_ms * 1e6);
  g->until = g->from + (uint64_t)(j->measure_ms * 1e6);
  uint64_t end = g->until + (uint64_t)(j->drain_ms * 1e6);
  uint64_t sweep_every = (uint64_t)(fmax(5.0, j->timeout_ms / 4) * 1e6);
  uint64_t next_sweep = t0 + sweep_every;
  int window_open = 0;
  double cpu0 = 0, cpu1 = -1;
  g->t0 = t0;
  g->per_ns = j->rate / 1e9;
  g->scheduled = 0;
  g->burst_cap = (uint64_t)fmax(64.0, ceil(j->rate * 0.02)); // more than 20 ms behind: say so

  g->sending = 1;
  g->idle_n = 0;
  for (int i = 0; i < g->n; i++) {
    client* c = &g->c[i];
    if (c->stage != ST_LOAD) continue;
    c->last_progress = t0;
    if (g->open_loop) g->idle[g->idle_n++] = (uint32_t)i;
    else refill(g, c);
  }
  flush(g);
  for (;;) {
    uint64_t now = mono_ns();
    if (!window_open && now >= g->from) {
      window_open = 1;
      cpu0 = thread_cpu_seconds();
      j->window_start_ms = epoch_ms() - (double)(now - g->from) / 1e6;
    }
    if (g->sending && now >= g->until) {
      g->sending = 0;
      cpu1 = thread_cpu_seconds();
      j->window_end_ms = epoch_ms() - (double)(now - g->until) / 1e6;
      if (g->open_loop) {
        // requests scheduled inside the window that never found an idle client
        uint64_t first = (uint64_t)ceil((double)(g->from - t0) * g->per_ns);
        uint64_t last = (uint64_t)floor((double)(g->until - t0) * g->per_ns);
        uint64_t done = g->scheduled > first ? g->scheduled : first;
        j->never_sent = last > done ? (double)(last - done) : 0;
      }
    }
    if (now >= end) break;
    uint64_t deadline = min_u64(next_sweep, end);
    if (!window_open) deadline = min_u64(deadline, g->from);
    if (g->sending) deadline = min_u64(deadline, g->until);
    int wake_on_reply = 1;
    if (g->open_loop && g->sending) {
      // Send first (a late request adds to its latency, a late read does not),
      // then read what arrived, which may free clients for requests still due.
      int behind = send_due(g);
      read_all(g);
      if (behind) send_due(g);
      if (g->idle_n > 0) {
        // all due requests are out: sleep until the next one is due
        deadline = min_u64(deadline, t0 + (uint64_t)ceil((double)(g->scheduled + 1) / g->per_ns));
        wake_on_reply = 0;
      } // else every client waits for its reply: the next reply (or the sweep) frees one
    }
    wait_for(g, deadline, wake_on_reply);
    now = mono_ns();
    if (now >= next_sweep) {
      sweep(g, now);
      next_sweep = now + sweep_every;
    }
  }
  if (cpu1 < 0) cpu1 = thread_cpu_seconds();
  j->cpu_seconds = window_open ? cpu1 - cpu0 : 0;
}

// Records a failed set-up call in j (the promise rejects with it).
static void fail(load_job* j, const char* syscall, int err, const struct sockaddr_in6* source, int client_index) {
  j->error = err;
  j->error_syscall = syscall;
  if (source != NULL) {
    char text[64] = "?";
    inet_ntop(j->family, addr_bytes(j, source), text, sizeof text);
    snprintf(j->error_detail, sizeof j->error_detail, "source %s (client %d)", text, client_index);
  }
}

// Every source must be an address of this host: sending from it with pktinfo
// would fail too, but binding says which one and why (EADDRNOTAVAIL).
static int check_sources(load_job* j) {
  for (int i = 0; i < j->nsrc; i++) {
    int fd = socket(j->family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { fail(j, "socket", errno, &j->src[i], i); return 0; }
    int ok = bind(fd, (struct sockaddr*)&j->src[i], j->src_len) == 0;
    int err = errno;
    close(fd);
    if (!ok) { fail(j, "bind", err, &j->src[i], i); return 0; }
  }
  return 1;
}

// One socket on the wildcard address: source address per datagram on send,
// destination address (and arrival time) per datagram on receive, ICMP errors queued.
// Returns the fd, or -1 (j->error set).
static int open_socket(load_job* j, int rcvbuf, int* got) {
  int fd = socket(j->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { fail(j, "socket", errno, NULL, 0); return -1; }
  int on = 1, sndbuf = 4 << 20;
  // more than net.core.rmem_max if we may (CAP_NET_ADMIN), else as much as it allows
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  socklen_t len = sizeof *got;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, got, &len) != 0) *got = rcvbuf;
  const char* syscall = "setsockopt";
  struct sockaddr_in6 any;
  memset(&any, 0, sizeof any);
  any.sin6_family = (sa_family_t)j->family; // the wildcard address and port 0, in either family
  // open loop: arrival times from the kernel (the closed loop reads at once; stamping costs)
  int r = j->rate > 0 ? setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) : 0;
  if (r == 0 && j->family == AF_INET) {
    // Don't fragment: the kernel then leaves the IP ID 0 instead of hashing one
    // per datagram, which an unconnected socket otherwise does (our datagrams are small).
    int pmtu = IP_PMTUDISC_DO;
    r = setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
    if (r == 0) r = setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
    if (r == 0) r = setsockopt(fd, IPPROTO_IP, IP_RECVERR, &on, sizeof on);
  } else if (r == 0) {
    r = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    if (r == 0) r = setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
    if (r == 0) r = setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &on, sizeof on);
  }
  if (r == 0) {
    syscall = "bind";
    r = bind(fd, (struct sockaddr*)&any, j->family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
  }
  if (r != 0) {
    fail(j, syscall, errno, NULL, 0);
    close(fd);
    return -1;
  }
  return fd;
}

// As many sockets as it takes to buffer every datagram that can be in flight.
static int open_sockets(gen* g) {
  load_job* j = g->j;
  double in_flight = (double)g->n * (g->open_loop ? 1 : j->window);
  int want = (int)fmin(in_flight * BUFFER_PER_DATAGRAM + (1 << 20), 1 << 30);
  int got = 0;
  g->fd[0] = open_socket(j, want, &got);
  if (g->fd[0] < 0) return 0;
  g->nfd = 1;
  int sockets = got > 0 ? (int)fmin(ceil((double)want / got), MAX_SOCKETS) : 1;
  if (sockets > g->n) sockets = g->n;
  while (g->nfd < sockets) {
    g->fd[g->nfd] = open_socket(j, want, &got);
    if (g->fd[g->nfd] < 0) return 0;
    g->nfd++;
  }
  return 1;
}

static void run_job(load_job* j) {
  gen* g = calloc(1, sizeof *g);
  if (g == NULL) { fail(j, "malloc", ENOMEM, NULL, 0); return; }
  g->j = j;
  g->n = j->nsrc;
  g->open_loop = j->rate > 0;
  uint32_t want = (g->open_loop ? 1 : j->window) + 1;
  g->ring_size = 4;
  while (g->ring_size < want) g->ring_size <<= 1;
  g->ring_mask = g->ring_size - 1;
  g->c = calloc((size_t)g->n, sizeof *g->c);
  g->ring = calloc((size_t)g->n * g->ring_size, sizeof *g->ring);
  g->idle = calloc((size_t)g->n + 1, sizeof *g->idle);
  g->rbuf = malloc((size_t)LOAD_RVLEN * LOAD_SLOT);
  g->rctrl = malloc((size_t)LOAD_RVLEN * LOAD_RCTRL);
  if (g->c == NULL || g->ring == NULL || g->idle == NULL || g->rbuf == NULL || g->rctrl == NULL) {
    fail(j, "malloc", ENOMEM, NULL, 0);
    goto out;
  }
  for (int i = 0; i < LOAD_RVLEN; i++) {
    g->riov[i].iov_base = g->rbuf + (size_t)i * LOAD_SLOT;
    g->riov[i].iov_len = LOAD_SLOT;
    g->rmsgs[i].msg_hdr = (struct msghdr){ .msg_name = &g->rnames[i], .msg_iov = &g->riov[i], .msg_iovlen = 1, .msg_control = g->rctrl + (size_t)i * LOAD_RCTRL };
  }
  for (int i = 0; i < LOAD_SVLEN; i++) {
    struct msghdr* h = &g->smsgs[i].msg_hdr;
    *h = (struct msghdr){ .msg_name = &j->server, .msg_namelen = j->server_len, .msg_iov = &g->siov[i], .msg_iovlen = 1, .msg_control = g->sctrl[i].b };
    struct cmsghdr* cm = (struct cmsghdr*)g->sctrl[i].b;
    if (j->family == AF_INET) {
      struct in_pktinfo* pi = (struct in_pktinfo*)CMSG_DATA(cm);
      cm->cmsg_level = IPPROTO_IP;
      cm->cmsg_type = IP_PKTINFO; // ipi_spec_dst: the source address; no interface
      cm->cmsg_len = CMSG_LEN(sizeof *pi);
      h->msg_controllen = CMSG_SPACE(sizeof *pi);
      g->ssrc[i] = (uint8_t*)&pi->ipi_spec_dst;
    } else {
      struct in6_pktinfo* pi = (struct in6_pktinfo*)CMSG_DATA(cm);
      cm->cmsg_level = IPPROTO_IPV6;
      cm->cmsg_type = IPV6_PKTINFO; // ipi6_addr: the source address; no interface
      cm->cmsg_len = CMSG_LEN(sizeof *pi);
      h->msg_controllen = CMSG_SPACE(sizeof *pi);
      g->ssrc[i] = (uint8_t*)&pi->ipi6_addr;
    }
  }
  if (!check_sources(j) || !open_sockets(g)) goto out;
  for (int i = 0; i < g->n; i++) g->c[i].stage = j->setup_tracker ? ST_ANNOUNCE : ST_LOAD;
  if (j->setup_tracker) run_setup(g);
  for (int i = 0; i < g->n; i++) if (g->c[i].stage == ST_LOAD) j->active++;
  run_load(g);
out:
  for (int s = 0; s < g->nfd; s++) close(g->fd[s]);
  free(g->c);
  free(g->ring);
  free(g->idle);
  free(g->rbuf);
  free(g->rctrl);
  free(g);
}

static void free_job(load_job* j) {
  free(j->src);
  free(j->by_addr);
  free(j->request);
  free(j->reply_marker);
  free(j->unknown_marker);
  free(j->hist);
  free(j);
}

// Main thread: settle the promise with the result.
static void load_settle(napi_env env, napi_value js_cb, void* context, void* data) {
  (void)js_cb;
  (void)context;
  load_job* j = data;
  if (env != NULL) {
    napi_handle_scope hs;
    napi_open_handle_scope(env, &hs);
    if (j->error) {
      napi_reject_deferred(env, j->deferred, make_errno_error(env, j->error, j->error_syscall, j->error_detail[0] ? j->error_detail : NULL));
    } else {
      napi_value r, ab, hist, b;
      void* data_ptr = NULL;
      napi_create_object(env, &r);
      set_named_double(env, r, "clients", j->nsrc);
      set_named_double(env, r, "activeClients", j->active);
      set_named_double(env, r, "seconds", j->measure_ms / 1000);
      set_named_double(env, r, "sent", j->sent);
      set_named_double(env, r, "sentInWindow", j->sent_in_window);
      set_named_double(env, r, "repliesInWindow", j->replies_in_window);
      set_named_double(env, r, "answeredInWindow", j->answered_in_window);
      set_named_double(env, r, "neverSent", j->never_sent);
      set_named_double(env, r, "timedOut", j->timed_out);
      set_named_double(env, r, "other", j->other);
      set_named_double(env, r, "unknownSession", j->unknown_session);
      set_named_double(env, r, "sendErrors", j->send_errors);
      set_named_double(env, r, "announceFailed", j->announce_failed);
      set_named_double(env, r, "proofFailed", j->proof_failed);
      napi_get_boolean(env, j->fell_behind != 0, &b);
      napi_set_named_property(env, r, "fellBehind", b);
      set_named_double(env, r, "cpuSeconds", j->cpu_seconds);
      set_named_double(env, r, "windowStartMs", j->window_start_ms);
      set_named_double(env, r, "windowEndMs", j->window_end_ms);
      if (napi_create_arraybuffer(env, HIST_BUCKETS * sizeof(double), &data_ptr, &ab) == napi_ok) {
        memcpy(data_ptr, j->hist, HIST_BUCKETS * sizeof(double));
        if (napi_create_typedarray(env, napi_float64_array, HIST_BUCKETS, ab, 0, &hist) == napi_ok) napi_set_named_property(env, r, "histogram", hist);
      }
      napi_resolve_deferred(env, j->deferred, r);
    }
    napi_close_handle_scope(env, hs);
  }
  free_job(j);
}

static void* load_thread(void* arg) {
  load_job* j = arg;
  prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0); // this thread only
  run_job(j);
  napi_threadsafe_function tsfn = j->tsfn; // j belongs to the main thread once handed over
  napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

static napi_value bad_spec(napi_env env, load_job* j, const char* msg) {
  free_job(j);
  return throw_type_error(env, msg);
}

static napi_value RunLoad(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], v;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_object) return throw_type_error(env, "runLoad(spec): spec must be an object");
  napi_value spec = argv[0];
  load_job* j = calloc(1, sizeof *j);
  if (j == NULL) { napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  j->hist = calloc(HIST_BUCKETS, sizeof(double));
  if (j->hist == NULL) { free_job(j); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }

  char text[64];
  double port, window, rate, warmup, measure, drain, timeout;
  if (get_opt_string(env, spec, "address", text, sizeof text) <= 0) return bad_spec(env, j, "spec.address must be an IP literal");
  if (!get_opt(env, spec, "port", &v)) return bad_spec(env, j, "spec.port must be a port number");
  if (!get_opt_number(env, spec, "port", 0, 1, 65535, &port)) { free_job(j); return NULL; }
  j->family = parse_ip(text, (unsigned)port, &j->server, &j->server_len);
  if (j->family == 0) return bad_spec(env, j, "spec.address must be an IP literal");
  if (!get_opt_number(env, spec, "window", 1, 1, 1 << 16, &window) || !get_opt_number(env, spec, "rate", 0, 0, 1e9, &rate) ||
      !get_opt_number(env, spec, "warmupMs", 0, 0, 1e9, &warmup) || !get_opt_number(env, spec, "measureMs", 1000, 1, 1e9, &measure) ||
      !get_opt_number(env, spec, "drainMs", 200, 0, 1e9, &drain) || !get_opt_number(env, spec, "timeoutMs", 1000, 1, 1e9, &timeout)) {
    free_job(j);
    return NULL;
  }
  j->window = (uint32_t)window;
  j->rate = rate;
  j->warmup_ms = warmup;
  j->measure_ms = measure;
  j->drain_ms = drain;
  j->timeout_ms = timeout;

  napi_value sources;
  bool is_array = false;
  uint32_t n = 0;
  if (!get_opt(env, spec, "sources", &sources) || napi_is_array(env, sources, &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, sources, &n) != napi_ok || n == 0) {
    return bad_spec(env, j, "spec.sources must be a non-empty array of IP literals");
  }
  j->nsrc = (int)n;
  j->src = calloc(n, sizeof *j->src);
  if (j->src == NULL) { free_job(j); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  for (uint32_t i = 0; i < n; i++) {
    size_t len;
    socklen_t slen;
    if (napi_get_element(env, sources, i, &v) != napi_ok || napi_get_value_string_utf8(env, v, text, sizeof text, &len) != napi_ok ||
        parse_ip(text, 0, &j->src[i], &slen) != j->family) {
      return bad_spec(env, j, "spec.sources must be IP literals of the server address's family");
    }
    j->src_len = slen;
  }
  // Clients share one port and are told apart by their address: a table to find them by it.
  j->addr_len = j->family == AF_INET ? 4 : 16;
  uint32_t slots = 8;
  while (slots < 2 * n) slots <<= 1;
  j->by_addr = malloc(slots * sizeof *j->by_addr);
  if (j->by_addr == NULL) { free_job(j); napi_throw_error(env, "ENOMEM", "out of memory"); return NULL; }
  memset(j->by_addr, 0xff, slots * sizeof *j->by_addr); // -1: empty
  j->by_addr_mask = slots - 1;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t slot = addr_slot(j, addr_bytes(j, &j->src[i]));
    if (j->by_addr[slot] >= 0) return bad_spec(env, j, "spec.sources must be distinct: clients are told apart by their address");
    j->by_addr[slot] = (int32_t)i;
  }
  char setup[16] = "none";
  if (get_opt_string(env, spec, "setup", setup, sizeof setup) < 0) return bad_spec(env, j, "spec.setup must be 'none', 'tracker' or 'token'");
  if (strcmp(setup, "tracker") == 0) j->setup_tracker = 1;
  else if (strcmp(setup, "token") == 0) j->setup_tracker = 2;
  else if (strcmp(setup, "none") != 0) return bad_spec(env, j, "spec.setup must be 'none', 'tracker' or 'token'");
  if (!get_opt(env, spec, "request", &v) || !get_bytes_copy(env, v, &j->request, &j->request_len)) return bad_spec(env, j, "spec.request must be a Buffer");
  if (!get_opt(env, spec, "replyMarker", &v) || !get_bytes_copy(env, v, &j->reply_marker, &j->reply_marker_len) || j->reply_marker_len == 0) {
    return bad_spec(env, j, "spec.replyMarker must be a non-empty Buffer");
  }
  if (get_opt(env, spec, "unknownMarker", &v)) {
    if (!get_bytes_copy(env, v, &j->unknown_marker, &j->unknown_marker_len)) return bad_spec(env, j, "spec.unknownMarker must be a Buffer or null");
    if (j->unknown_marker_len == 0) { free(j->unknown_marker); j->unknown_marker = NULL; }
  }

  napi_value promise, name;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) { free_job(j); return NULL; }
  napi_create_string_utf8(env, "sobaniRunLoad", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, load_settle, &j->tsfn) != napi_ok) {
    napi_reject_deferred(env, j->deferred, make_errno_error(env, EAGAIN, "napi_create_threadsafe_function", NULL));
    free_job(j);
    return promise;
  }
  pthread_attr_t attr;
  pthread_t thread;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int err = pthread_create(&thread, &attr, load_thread, j);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
    napi_reject_deferred(env, j->deferred, make_errno_error(env, err, "pthread_create", NULL));
    free_job(j);
  }
  return promise;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
    { "address", NULL, Echo_address, NULL, NULL, NULL, napi_default_method, NULL },
    { "stats", NULL, Echo_stats, NULL, NULL, NULL, napi_default_method, NULL },
    { "close", NULL, Echo_close, NULL, NULL, NULL, napi_default_method, NULL },
  };
  napi_value cls, fn, buckets;
  NAPI_OK(napi_define_class(env, "EchoServer", NAPI_AUTO_LENGTH, Echo_new, NULL, sizeof methods / sizeof methods[0], methods, &cls));
  NAPI_OK(napi_set_named_property(env, exports, "EchoServer", cls));
  NAPI_OK(napi_create_function(env, "runLoad", NAPI_AUTO_LENGTH, RunLoad, NULL, &fn));
  NAPI_OK(napi_set_named_property(env, exports, "runLoad", fn));
  NAPI_OK(napi_create_uint32(env, HIST_BUCKETS, &buckets));
  NAPI_OK(napi_set_named_property(env, exports, "HISTOGRAM_BUCKETS", buckets));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
