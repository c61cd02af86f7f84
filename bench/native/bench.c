// sobani_bench: native helpers for the benchmark, never used by the tracker.
//
// 1. EchoServer: receives with recvmmsg and sends every datagram back to its
//    source with sendmmsg, watched by a uv_poll_t on the main thread's loop. No
//    JS runs per datagram: it is the kernel's ceiling for one socket and core.
//
// 2. runLoad(spec): a UDP load generator on its own pthread, so JS is never
//    blocked. One socket per simulated client, each bound to its own source IP
//    and connected to the server; epoll over all of them, recvmmsg per readable
//    socket, sendmmsg for the requests due on one socket. It mirrors
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NAPI_OK(call) do { if ((call) != napi_ok) return NULL; } while (0)

// ---- shared helpers ---------------------------------------------------------------

static napi_value throw_type_error(napi_env env, const char* msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  return NULL;
}

static void set_double(napi_env env, napi_value obj, const char* key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

static void set_string(napi_env env, napi_value obj, const char* key, const char* value) {
  napi_value v;
  if (napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

static napi_value make_errno_error(napi_env env, int err, const char* syscall, const char* detail) {
  const char* code = uv_err_name(-err);
  char msg[320];
  snprintf(msg, sizeof msg, "%s %s%s%s (%s)", syscall, code, detail ? " " : "", detail ? detail : "", strerror(err));
  napi_value code_v, msg_v, error;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_error(env, code_v, msg_v, &error);
  set_double(env, error, "errno", -err);
  set_string(env, error, "syscall", syscall);
  return error;
}

static int get_opt(napi_env env, napi_value obj, const char* key, napi_value* out) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return 0;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  return t != napi_undefined && t != napi_null;
}

static int get_number(napi_env env, napi_value obj, const char* key, double dflt, double lo, double hi, double* out) {
  napi_value v;
  if (!get_opt(env, obj, key, &v)) { *out = dflt; return 1; }
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < lo || d > hi) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a number in %g..%g", key, lo, hi);
    throw_type_error(env, msg);
    return 0;
  }
  *out = d;
  return 1;
}

static int get_string(napi_env env, napi_value obj, const char* key, char* buf, size_t size) {
  napi_value v;
  size_t n;
  if (!get_opt(env, obj, key, &v) || napi_get_value_string_utf8(env, v, buf, size, &n) != napi_ok) return 0;
  return 1;
}

// Copies a Buffer / TypedArray / ArrayBuffer into malloc'd memory.
static int get_bytes_copy(napi_env env, napi_value v, uint8_t** out, size_t* out_len) {
  bool is = false;
  void* data = NULL;
  size_t len = 0;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    napi_value ab;
    size_t off;
    if (napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok) return 0;
    if (type != napi_uint8_array && type != napi_int8_array && type != napi_uint8_clamped_array) return 0;
  } else if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    if (napi_get_arraybuffer_info(env, v, &data, &len) != napi_ok) return 0;
  } else {
    return 0;
  }
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
  int hook_added;
  struct mmsghdr msgs[ECHO_VLEN];
  struct iovec iov[ECHO_VLEN];
  struct sockaddr_in6 names[ECHO_VLEN];
  uint8_t* bufs;
  uint64_t received, echoed, send_errors;
} echo_server;

static void free_handle(uv_handle_t* h) { free(h); }

static void echo_close_now(echo_server* e) {
  if (e->closed) return;
  e->closed = 1;
  if (e->poll != NULL) {
    uv_poll_stop(e->poll);
    uv_close((uv_handle_t*)e->poll, free_handle);
    e->poll = NULL;
  }
  if (e->fd >= 0) { close(e->fd); e->fd = -1; }
}

static void echo_cleanup_hook(void* arg) {
  echo_server* e = arg;
  e->hook_added = 0;
  echo_close_now(e);
}

static void echo_finalize(napi_env env, void* data, void* hint) {
  (void)hint;
  echo_server* e = data;
  echo_close_now(e);
  if (e->hook_added) napi_remove_env_cleanup_hook(env, echo_cleanup_hook, e);
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
  size_t argc = 1;
  napi_value argv[1], self, new_target;
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  NAPI_OK(napi_get_new_target(env, info, &new_target));
  if (new_target == NULL) return throw_type_error(env, "EchoServer must be called with new");
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_object) return throw_type_error(env, "new EchoServer(options): options must be an object");
  char host[64] = "127.0.0.1";
  napi_value v;
  if (get_opt(env, argv[0], "host", &v) && !get_string(env, argv[0], "host", host, sizeof host)) return throw_type_error(env, "host must be a string");
  double port, rcvbuf, sndbuf;
  if (!get_number(env, argv[0], "port", 0, 0, 65535, &port)) return NULL;
  if (!get_number(env, argv[0], "recvBufferSize", 0, 0, 2147483647.0, &rcvbuf)) return NULL;
  if (!get_number(env, argv[0], "sendBufferSize", 0, 0, 2147483647.0, &sndbuf)) return NULL;
  struct sockaddr_in6 addr;
  socklen_t addr_len;
  int family = parse_ip(host, (unsigned)port, &addr, &addr_len);
  if (family == 0) return throw_type_error(env, "host must be an IP address literal");
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) { napi_throw(env, make_errno_error(env, errno, "socket", NULL)); return NULL; }
  if (family == AF_INET6) {
    int off = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
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
  napi_create_reference(env, self, 1, &e->wrapper_ref); // alive while open
  if (napi_add_env_cleanup_hook(env, echo_cleanup_hook, e) == napi_ok) e->hook_added = 1;
  uv_poll_start(e->poll, UV_READABLE, echo_on_poll);
  return self;
}

static echo_server* echo_this(napi_env env, napi_callback_info info) {
  napi_value self;
  echo_server* e = NULL;
  if (napi_get_cb_info(env, info, NULL, NULL, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, (void**)&e) != napi_ok) { throw_type_error(env, "not an EchoServer"); return NULL; }
  return e;
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
  napi_value obj;
  NAPI_OK(napi_create_object(env, &obj));
  set_string(env, obj, "address", text);
  set_double(env, obj, "port", ntohs(a.sin6_port));
  set_string(env, obj, "family", a.sin6_family == AF_INET6 ? "IPv6" : "IPv4");
  return obj;
}

static napi_value Echo_stats(napi_env env, napi_callback_info info) {
  echo_server* e = echo_this(env, info);
  if (e == NULL) return NULL;
  napi_value obj;
  NAPI_OK(napi_create_object(env, &obj));
  set_double(env, obj, "received", (double)e->received);
  set_double(env, obj, "echoed", (double)e->echoed);
  set_double(env, obj, "sendErrors", (double)e->send_errors);
  return obj;
}

static napi_value Echo_close(napi_env env, napi_callback_info info) {
  echo_server* e = echo_this(env, info);
  if (e == NULL) return NULL;
  echo_close_now(e);
  if (e->hook_added) { napi_remove_env_cleanup_hook(env, echo_cleanup_hook, e); e->hook_added = 0; }
  if (e->wrapper_ref != NULL) { napi_delete_reference(env, e->wrapper_ref); e->wrapper_ref = NULL; }
  return NULL;
}

// ==== Load generator =======================================================================

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

#define LOAD_RVLEN 64
#define LOAD_SVLEN 64
#define LOAD_SLOT 2048
#define SETUP_BURST 64
#define MAX_EVENTS 512

static const char ANNOUNCE[] = "{\"action\":\"announce\",\"pad\":\"xxxxxxxxxxxxxxxxxx\"}";
static const char SHARE_ID_KEY[] = "\"shareId\":\"";
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
  uint32_t window;
  double rate;
  double warmup_ms, measure_ms, drain_ms, timeout_ms;
  int setup_tracker;
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

enum { ST_ANNOUNCE = 0, ST_PROVE = 1, ST_LOAD = 2, ST_FAILED = 3 };

typedef struct {
  int fd;
  uint8_t stage;
  uint32_t outstanding;
  uint64_t last_progress;
  uint32_t head, tail; // ring of send times, oldest at tail
  uint8_t proof_len;
  char proof[112];
} client;

typedef struct {
  load_job* j;
  client* c;
  int n;
  uint64_t* ring;
  uint32_t ring_size, ring_mask;
  int epfd;
  int have_pwait2;
  uint8_t* rbuf;
  struct mmsghdr rmsgs[LOAD_RVLEN];
  struct iovec riov[LOAD_RVLEN];
  struct mmsghdr smsgs[LOAD_SVLEN];
  struct iovec siov;
  uint32_t* idle;
  int idle_n;
  int open_loop;
  int sending;
  int pending_setup;
  uint64_t from, until; // measurement window, CLOCK_MONOTONIC ns
} gen;

static int wait_events(gen* g, struct epoll_event* ev, int max, int64_t timeout_ns) {
  if (timeout_ns < 0) timeout_ns = 0;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
  if (g->have_pwait2) {
    struct timespec ts = { (time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000) };
    int r = epoll_pwait2(g->epfd, ev, max, &ts, NULL);
    if (r >= 0 || errno != ENOSYS) return r;
    g->have_pwait2 = 0;
  }
#endif
  return epoll_wait(g->epfd, ev, max, (int)((timeout_ns + 999999) / 1000000));
}

static inline int in_window(const gen* g, uint64_t t) { return t >= g->from && t < g->until; }

// Closed loop: sends k requests on one client in one sendmmsg (or a few).
static void send_requests(gen* g, client* c, uint32_t k) {
  load_job* j = g->j;
  while (k > 0) {
    unsigned m = k < LOAD_SVLEN ? k : LOAD_SVLEN;
    uint64_t now = mono_ns();
    int r = sendmmsg(c->fd, g->smsgs, m, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      j->send_errors++; // the client is refilled by a later reply or by the sweep
      return;
    }
    if (r == 0) return;
    for (int i = 0; i < r; i++) {
      if (c->head - c->tail >= g->ring_size) c->tail++; // cannot happen: the oldest is forgotten
      g->ring[(size_t)(c - g->c) * g->ring_size + (c->head & g->ring_mask)] = now;
      c->head++;
    }
    c->outstanding += (uint32_t)r;
    j->sent += r;
    if (in_window(g, now)) j->sent_in_window += r;
    k -= (uint32_t)r;
  }
}

static void refill(gen* g, client* c) {
  if (g->sending && c->stage == ST_LOAD && c->outstanding < g->j->window) send_requests(g, c, g->j->window - c->outstanding);
}

static void send_setup(gen* g, client* c) {
  ssize_t r;
  if (c->stage == ST_ANNOUNCE) r = send(c->fd, ANNOUNCE, sizeof ANNOUNCE - 1, MSG_DONTWAIT);
  else if (c->stage == ST_PROVE) r = send(c->fd, c->proof, c->proof_len, MSG_DONTWAIT);
  else return;
  (void)r; // a lost setup datagram is retried 500 ms later
}

static void on_setup_reply(gen* g, client* c, const uint8_t* msg, size_t len) {
  if (c->stage == ST_ANNOUNCE) {
    const uint8_t* p = memmem(msg, len, SHARE_ID_KEY, sizeof SHARE_ID_KEY - 1);
    if (p == NULL) return;
    const uint8_t* id = p + sizeof SHARE_ID_KEY - 1;
    const uint8_t* end = memchr(id, '"', len - (size_t)(id - msg));
    if (end == NULL || end == id || end - id > 64) return;
    int n = snprintf(c->proof, sizeof c->proof, "{\"action\":\"pulse\",\"shareId\":\"%.*s\"}", (int)(end - id), (const char*)id);
    c->proof_len = (uint8_t)n;
    c->stage = ST_PROVE;
    send_setup(g, c); // prove at once: no need to wait for the next round
  } else if (c->stage == ST_PROVE) {
    if (memmem(msg, len, PULSE_RECEIVED, sizeof PULSE_RECEIVED - 1) != NULL && memmem(msg, len, STATUS_OK, sizeof STATUS_OK - 1) != NULL) {
      c->stage = ST_LOAD;
      g->pending_setup--;
    }
  }
}

static void on_reply(gen* g, client* c, const uint8_t* msg, size_t len, uint64_t now) {
  load_job* j = g->j;
  if (memmem(msg, len, j->reply_marker, j->reply_marker_len) == NULL) {
    j->other++; // e.g. a late setup reply
    return;
  }
  if (j->unknown_marker != NULL && memmem(msg, len, j->unknown_marker, j->unknown_marker_len) != NULL) j->unknown_session++;
  if (in_window(g, now)) j->replies_in_window++;
  if (c->head != c->tail) {
    uint64_t sent_at = g->ring[(size_t)(c - g->c) * g->ring_size + (c->tail & g->ring_mask)];
    c->tail++;
    if (in_window(g, sent_at)) {
      j->answered_in_window++;
      j->hist[hist_index(now > sent_at ? now - sent_at : 0)] += 1;
    }
  }
  c->last_progress = now;
  if (c->outstanding > 0) {
    c->outstanding--;
    if (g->open_loop && c->outstanding == 0) g->idle[g->idle_n++] = (uint32_t)(c - g->c);
  }
}

static void on_readable(gen* g, client* c) {
  for (;;) {
    int r = recvmmsg(c->fd, g->rmsgs, LOAD_RVLEN, MSG_DONTWAIT, NULL);
    if (r < 0) {
      if (errno == EINTR) continue;
      // ECONNREFUSED and the like: an ICMP error for an earlier send
      if (errno != EAGAIN && errno != EWOULDBLOCK) g->j->send_errors++;
      break;
    }
    if (r == 0) break;
    uint64_t now = mono_ns();
    for (int i = 0; i < r; i++) {
      const uint8_t* msg = g->riov[i].iov_base;
      size_t len = g->rmsgs[i].msg_len;
      if (c->stage == ST_LOAD) on_reply(g, c, msg, len, now);
      else if (c->stage != ST_FAILED) on_setup_reply(g, c, msg, len);
      else g->j->other++;
    }
    if (r < LOAD_RVLEN) break;
  }
  if (!g->open_loop) refill(g, c);
}

static void sweep(gen* g, uint64_t now) {
  load_job* j = g->j;
  uint64_t timeout = (uint64_t)(j->timeout_ms * 1e6);
  for (int i = 0; i < g->n; i++) {
    client* c = &g->c[i];
    if (c->stage != ST_LOAD) continue;
    if (c->outstanding > 0 && now - c->last_progress > timeout) {
      j->timed_out += c->outstanding;
      c->outstanding = 0;
      c->tail = c->head;
      c->last_progress = now;
      if (g->open_loop) g->idle[g->idle_n++] = (uint32_t)i;
    }
    if (!g->open_loop) refill(g, c); // also restarts a client whose sends failed
  }
}

// Set-up 'tracker': announce, take the shareId, prove with a pulse carrying it.
static void run_setup(gen* g) {
  struct epoll_event ev[MAX_EVENTS];
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
        if (c->stage == ST_ANNOUNCE || c->stage == ST_PROVE) { send_setup(g, c); sent++; }
      }
      next_burst = now + 2000000ull;
    }
    uint64_t until = next_round < deadline ? next_round : deadline;
    if (cursor < g->n && next_burst < until) until = next_burst;
    int k = wait_events(g, ev, MAX_EVENTS, (int64_t)(until - now));
    for (int i = 0; i < k; i++) on_readable(g, &g->c[ev[i].data.u32]);
  }
  for (int i = 0; i < g->n; i++) {
    client* c = &g->c[i];
    if (c->stage == ST_ANNOUNCE) { g->j->announce_failed++; c->stage = ST_FAILED; }
    else if (c->stage == ST_PROVE) { g->j->proof_failed++; c->stage = ST_FAILED; }
  }
}

static void run_load(gen* g) {
  load_job* j = g->j;
  struct epoll_event ev[MAX_EVENTS];
  uint64_t t0 = mono_ns();
  g->from = t0 + (uint64_t)(j->warmup_ms * 1e6);
  g->until = g->from + (uint64_t)(j->measure_ms * 1e6);
  uint64_t end = g->until + (uint64_t)(j->drain_ms * 1e6);
  uint64_t sweep_every = (uint64_t)(fmax(5.0, j->timeout_ms / 4) * 1e6);
  uint64_t next_sweep = t0 + sweep_every;
  int window_open = 0;
  double cpu0 = 0, cpu1 = -1;
  // open loop
  double per_ns = j->rate / 1e9;
  uint64_t scheduled = 0;
  uint64_t burst_cap = (uint64_t)fmax(64.0, ceil(j->rate * 0.02)); // more than 20 ms behind: say so

  g->sending = 1;
  g->idle_n = 0;
  for (int i = 0; i < g->n; i++) {
    client* c = &g->c[i];
    if (c->stage != ST_LOAD) continue;
    c->last_progress = t0;
    if (g->open_loop) g->idle[g->idle_n++] = (uint32_t)i;
    else refill(g, c);
  }
  for (;;) {
    uint64_t now = mono_ns();
    if (!window_open && now >= g->from) { window_open = 1; cpu0 = thread_cpu_seconds(); j->window_start_ms = epoch_ms(); }
    if (g->sending && now >= g->until) {
      g->sending = 0;
      cpu1 = thread_cpu_seconds();
      j->window_end_ms = epoch_ms();
      if (g->open_loop) {
        // requests scheduled inside the window that never found an idle client
        uint64_t first = (uint64_t)ceil((double)(g->from - t0) * per_ns);
        uint64_t last = (uint64_t)floor((double)(g->until - t0) * per_ns);
        uint64_t done = scheduled > first ? scheduled : first;
        j->never_sent = last > done ? (double)(last - done) : 0;
      }
    }
    if (now >= end) break;
    int64_t timeout = (int64_t)(next_sweep - now);
    if (g->open_loop && g->sending) {
      uint64_t due = (uint64_t)((double)(now - t0) * per_ns);
      if (due > scheduled + burst_cap) j->fell_behind = 1;
      while (scheduled < due && g->idle_n > 0) {
        client* c = &g->c[g->idle[--g->idle_n]];
        // timed from its scheduled send time: a server stall is not hidden (no coordinated omission)
        uint64_t at = t0 + (uint64_t)((double)scheduled / per_ns);
        scheduled++;
        ssize_t r;
        do r = send(c->fd, j->request, j->request_len, MSG_DONTWAIT); while (r < 0 && errno == EINTR);
        if (r < 0) {
          j->send_errors++;
          g->idle[g->idle_n++] = (uint32_t)(c - g->c);
          continue;
        }
        if (c->head - c->tail >= g->ring_size) c->tail++;
        g->ring[(size_t)(c - g->c) * g->ring_size + (c->head & g->ring_mask)] = at;
        c->head++;
        c->outstanding++;
        c->last_progress = now;
        j->sent++;
        if (in_window(g, at)) j->sent_in_window++;
      }
      if (scheduled >= due) {
        uint64_t next_due = t0 + (uint64_t)ceil((double)(scheduled + 1) / per_ns);
        if ((int64_t)(next_due - now) < timeout) timeout = (int64_t)(next_due - now);
      } // else: every client is busy; a reply (or the sweep) frees one
    }
    if (!window_open && (int64_t)(g->from - now) < timeout) timeout = (int64_t)(g->from - now);
    if (g->sending && (int64_t)(g->until - now) < timeout) timeout = (int64_t)(g->until - now);
    if ((int64_t)(end - now) < timeout) timeout = (int64_t)(end - now);
    int k = wait_events(g, ev, MAX_EVENTS, timeout);
    for (int i = 0; i < k; i++) on_readable(g, &g->c[ev[i].data.u32]);
    now = mono_ns();
    if (now >= next_sweep) {
      sweep(g, now);
      next_sweep = now + sweep_every;
    }
  }
  if (cpu1 < 0) cpu1 = thread_cpu_seconds();
  j->cpu_seconds = window_open ? cpu1 - cpu0 : 0;
}

static void run_job(load_job* j) {
  gen g;
  memset(&g, 0, sizeof g);
  g.j = j;
  g.n = j->nsrc;
  g.open_loop = j->rate > 0;
  g.have_pwait2 = 1;
  g.epfd = -1;
  uint32_t want = (g.open_loop ? 1 : j->window) + 1;
  g.ring_size = 4;
  while (g.ring_size < want) g.ring_size <<= 1;
  g.ring_mask = g.ring_size - 1;
  g.c = calloc((size_t)g.n, sizeof *g.c);
  g.ring = calloc((size_t)g.n * g.ring_size, sizeof *g.ring);
  g.idle = calloc((size_t)g.n + 1, sizeof *g.idle);
  g.rbuf = malloc((size_t)LOAD_RVLEN * LOAD_SLOT);
  if (g.c == NULL || g.ring == NULL || g.idle == NULL || g.rbuf == NULL) {
    j->error = ENOMEM;
    j->error_syscall = "malloc";
    goto out;
  }
  for (int i = 0; i < g.n; i++) g.c[i].fd = -1;
  for (int i = 0; i < LOAD_RVLEN; i++) {
    g.riov[i].iov_base = g.rbuf + (size_t)i * LOAD_SLOT;
    g.riov[i].iov_len = LOAD_SLOT;
    g.rmsgs[i].msg_hdr.msg_iov = &g.riov[i];
    g.rmsgs[i].msg_hdr.msg_iovlen = 1;
  }
  g.siov.iov_base = j->request;
  g.siov.iov_len = j->request_len;
  for (int i = 0; i < LOAD_SVLEN; i++) {
    g.smsgs[i].msg_hdr.msg_iov = &g.siov;
    g.smsgs[i].msg_hdr.msg_iovlen = 1;
  }
  g.epfd = epoll_create1(EPOLL_CLOEXEC);
  if (g.epfd < 0) { j->error = errno; j->error_syscall = "epoll_create1"; goto out; }
  for (int i = 0; i < g.n; i++) {
    client* c = &g.c[i];
    int fd = socket(j->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const char* syscall = "socket";
    if (fd >= 0) {
      int size = 1 << 18;
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
      struct epoll_event e = { .events = EPOLLIN, .data = { .u32 = (uint32_t)i } };
      if (bind(fd, (struct sockaddr*)&j->src[i], j->src_len) != 0) syscall = "bind";
      else if (connect(fd, (struct sockaddr*)&j->server, j->server_len) != 0) syscall = "connect";
      else if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &e) != 0) syscall = "epoll_ctl";
      else syscall = NULL;
    }
    if (syscall != NULL) {
      j->error = errno;
      j->error_syscall = syscall;
      char text[64] = "?";
      if (j->family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in*)&j->src[i])->sin_addr, text, sizeof text);
      else inet_ntop(AF_INET6, &j->src[i].sin6_addr, text, sizeof text);
      snprintf(j->error_detail, sizeof j->error_detail, "source %s (client %d)", text, i);
      if (fd >= 0) close(fd);
      goto out;
    }
    c->fd = fd;
    c->stage = j->setup_tracker ? ST_ANNOUNCE : ST_LOAD;
  }
  if (j->setup_tracker) run_setup(&g);
  for (int i = 0; i < g.n; i++) if (g.c[i].stage == ST_LOAD) j->active++;
  run_load(&g);
out:
  if (g.c != NULL) for (int i = 0; i < g.n; i++) if (g.c[i].fd >= 0) close(g.c[i].fd);
  if (g.epfd >= 0) close(g.epfd);
  free(g.c);
  free(g.ring);
  free(g.idle);
  free(g.rbuf);
}

static void free_job(load_job* j) {
  free(j->src);
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
      set_double(env, r, "clients", j->nsrc);
      set_double(env, r, "activeClients", j->active);
      set_double(env, r, "seconds", j->measure_ms / 1000);
      set_double(env, r, "sent", j->sent);
      set_double(env, r, "sentInWindow", j->sent_in_window);
      set_double(env, r, "repliesInWindow", j->replies_in_window);
      set_double(env, r, "answeredInWindow", j->answered_in_window);
      set_double(env, r, "neverSent", j->never_sent);
      set_double(env, r, "timedOut", j->timed_out);
      set_double(env, r, "other", j->other);
      set_double(env, r, "unknownSession", j->unknown_session);
      set_double(env, r, "sendErrors", j->send_errors);
      set_double(env, r, "announceFailed", j->announce_failed);
      set_double(env, r, "proofFailed", j->proof_failed);
      napi_get_boolean(env, j->fell_behind != 0, &b);
      napi_set_named_property(env, r, "fellBehind", b);
      set_double(env, r, "cpuSeconds", j->cpu_seconds);
      set_double(env, r, "windowStartMs", j->window_start_ms);
      set_double(env, r, "windowEndMs", j->window_end_ms);
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
  if (!get_string(env, spec, "address", text, sizeof text)) return bad_spec(env, j, "spec.address must be an IP literal");
  if (!get_opt(env, spec, "port", &v)) return bad_spec(env, j, "spec.port must be a port number");
  if (!get_number(env, spec, "port", 0, 1, 65535, &port)) { free_job(j); return NULL; }
  j->family = parse_ip(text, (unsigned)port, &j->server, &j->server_len);
  if (j->family == 0) return bad_spec(env, j, "spec.address must be an IP literal");
  if (!get_number(env, spec, "window", 1, 1, 1 << 16, &window) || !get_number(env, spec, "rate", 0, 0, 1e9, &rate) ||
      !get_number(env, spec, "warmupMs", 0, 0, 1e9, &warmup) || !get_number(env, spec, "measureMs", 1000, 1, 1e9, &measure) ||
      !get_number(env, spec, "drainMs", 200, 0, 1e9, &drain) || !get_number(env, spec, "timeoutMs", 1000, 1, 1e9, &timeout)) {
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
  char setup[16] = "none";
  if (get_opt(env, spec, "setup", &v) && !get_string(env, spec, "setup", setup, sizeof setup)) return bad_spec(env, j, "spec.setup must be 'none' or 'tracker'");
  if (strcmp(setup, "tracker") == 0) j->setup_tracker = 1;
  else if (strcmp(setup, "none") != 0) return bad_spec(env, j, "spec.setup must be 'none' or 'tracker'");
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
