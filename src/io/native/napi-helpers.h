// Small Node-API helpers shared by the two C addons in binding.gyp: the tracker's
// UDP socket (src/io/native/udp.c) and the benchmark's echo server and load
// generator (bench/native/bench.c, which includes this file by a relative path).
// It lives here, not under bench/, because a Docker build context has no bench/.
//
// Argument checks throw a TypeError with code ERR_INVALID_ARG_VALUE; system call
// failures an Error shaped like node's own (code 'EADDRINUSE', errno, syscall).
// Everything is static inline: each addon keeps its own copy of what it uses.
// Include it after defining NAPI_VERSION (and _GNU_SOURCE).
#ifndef SOBANI_NAPI_HELPERS_H
#define SOBANI_NAPI_HELPERS_H

#include <node_api.h>
#include <uv.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

// In a function returning napi_value: return NULL (a JS exception may be pending) unless `call` succeeds.
#define NAPI_OK(call) do { if ((call) != napi_ok) return NULL; } while (0)

static inline napi_value throw_type_error(napi_env env, const char* msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  return NULL;
}

static inline void set_named_string(napi_env env, napi_value obj, const char* key, const char* value) {
  napi_value v;
  if (napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

static inline void set_named_double(napi_env env, napi_value obj, const char* key, double value) {
  napi_value v;
  if (napi_create_double(env, value, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

// An Error like node's own socket errors, not thrown: message "<syscall> <code> [<detail> ](<strerror>)",
// code 'EADDRINUSE' (say), errno -98, syscall. `detail` (e.g. "host:port") may be NULL.
static inline napi_value make_errno_error(napi_env env, int err, const char* syscall, const char* detail) {
  const char* code = uv_err_name(-err);
  char msg[320];
  snprintf(msg, sizeof msg, "%s %s%s%s (%s)", syscall, code, detail ? " " : "", detail ? detail : "", strerror(err));
  napi_value code_v, msg_v, error;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v);
  napi_create_error(env, code_v, msg_v, &error);
  set_named_double(env, error, "errno", -err);
  set_named_string(env, error, "syscall", syscall);
  return error;
}

// The start of a constructor `new <name>(options)`: sets *self and returns the
// options object, or throws a TypeError (not called with new, no object) and returns NULL.
static inline napi_value constructor_options(napi_env env, napi_callback_info info, const char* name, napi_value* self) {
  size_t argc = 1;
  napi_value argv[1], new_target;
  char msg[128];
  NAPI_OK(napi_get_cb_info(env, info, &argc, argv, self, NULL));
  NAPI_OK(napi_get_new_target(env, info, &new_target));
  if (new_target == NULL) {
    snprintf(msg, sizeof msg, "%s must be called with new", name);
    return throw_type_error(env, msg);
  }
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_object) {
    snprintf(msg, sizeof msg, "new %s(options): options must be an object", name);
    return throw_type_error(env, msg);
  }
  return argv[0];
}

// Every wrapped object is tagged with its class's tag (napi_type_tag_object right
// after napi_wrap): napi_unwrap alone would hand one addon's struct to the other's
// methods (UdpSocket.prototype.close.call(anEchoServer)), and memory would be
// read and written as the wrong type.
static inline int tag_wrapped(napi_env env, napi_value obj, const napi_type_tag* tag) {
  return napi_type_tag_object(env, obj, tag) == napi_ok;
}

// The native object wrapped in `this` if `this` carries `tag`, else NULL with a
// TypeError `msg` thrown (e.g. "not a UdpSocket").
static inline void* get_wrapped_this(napi_env env, napi_callback_info info, const napi_type_tag* tag, const char* msg) {
  napi_value self;
  void* p = NULL;
  bool tagged = false;
  if (napi_get_cb_info(env, info, NULL, NULL, &self, NULL) != napi_ok) return NULL;
  if (napi_check_object_type_tag(env, self, tag, &tagged) != napi_ok || !tagged || napi_unwrap(env, self, &p) != napi_ok || p == NULL) {
    throw_type_error(env, msg);
    return NULL;
  }
  return p;
}

// ---- options: properties of an options object ------------------------------------

// Returns 1 and sets *out if obj[key] is present (not undefined/null).
static inline int get_opt(napi_env env, napi_value obj, const char* key, napi_value* out) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return 0;
  napi_valuetype t;
  napi_typeof(env, *out, &t);
  return t != napi_undefined && t != napi_null;
}

// obj[key] as a number in lo..hi (a whole one if `integer`), or dflt when absent.
// Returns 1, or 0 with a TypeError thrown.
static inline int get_opt_number_in(napi_env env, napi_value obj, const char* key, double dflt, double lo, double hi,
                                    int integer, double* out) {
  napi_value v;
  if (!get_opt(env, obj, key, &v)) { *out = dflt; return 1; }
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d != d || d < lo || d > hi || (integer && d != (double)(int64_t)d)) {
    char msg[160];
    snprintf(msg, sizeof msg, "option %s must be %s in %.15g..%.15g", key, integer ? "an integer" : "a number", lo, hi);
    throw_type_error(env, msg);
    return 0;
  }
  *out = d;
  return 1;
}

// An integer option in lo..hi (a port, a size, a count), or dflt.
static inline int get_opt_integer(napi_env env, napi_value obj, const char* key, double dflt, double lo, double hi, double* out) {
  return get_opt_number_in(env, obj, key, dflt, lo, hi, 1, out);
}

// A number option in lo..hi, fractions allowed (a rate, milliseconds), or dflt.
static inline int get_opt_number(napi_env env, napi_value obj, const char* key, double dflt, double lo, double hi, double* out) {
  return get_opt_number_in(env, obj, key, dflt, lo, hi, 0, out);
}

// obj[key] as UTF-8 into buf (cut to size - 1 bytes). Returns 1 if it is a string,
// 0 if absent (buf untouched: it keeps its default), -1 if it is anything else.
static inline int get_opt_string(napi_env env, napi_value obj, const char* key, char* buf, size_t size) {
  napi_value v;
  size_t n;
  if (!get_opt(env, obj, key, &v)) return 0;
  return napi_get_value_string_utf8(env, v, buf, size, &n) == napi_ok ? 1 : -1;
}

// Bytes of an ArrayBuffer, TypedArray, DataView or Buffer, not copied (valid while
// the value is). A detached buffer gives len 0. Returns 0 for anything else.
static inline int get_bytes(napi_env env, napi_value v, uint8_t** data, size_t* len) {
  bool is;
  void* p = NULL;
  *data = NULL;
  *len = 0;
  if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
    if (napi_get_arraybuffer_info(env, v, &p, len) != napi_ok) return 0;
    *data = p;
    return 1;
  }
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type type;
    size_t n, off;
    napi_value ab;
    if (napi_get_typedarray_info(env, v, &type, &n, &p, &ab, &off) != napi_ok) return 0;
    size_t elem = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: elem = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
      default: elem = 1;
    }
    *data = p;
    *len = p == NULL ? 0 : n * elem;
    return 1;
  }
  if (napi_is_dataview(env, v, &is) == napi_ok && is) {
    napi_value ab;
    size_t off;
    if (napi_get_dataview_info(env, v, len, &p, &ab, &off) != napi_ok) return 0;
    *data = p;
    if (p == NULL) *len = 0;
    return 1;
  }
  return 0;
}

// ---- results ------------------------------------------------------------------------

// { address, port, family } as node's socket.address() gives it.
static inline napi_value address_object(napi_env env, const char* address, unsigned port, int family) {
  napi_value obj;
  NAPI_OK(napi_create_object(env, &obj));
  set_named_string(env, obj, "address", address);
  set_named_double(env, obj, "port", port);
  set_named_string(env, obj, "family", family == AF_INET6 ? "IPv6" : "IPv4");
  return obj;
}

// ---- libuv: closing poll handles, also when the environment goes away ------------------
//
// A poll handle's close callback is code in this addon. When a worker thread's
// environment goes away, node runs its cleanup hooks, may run the loop little or
// not at all, and unloads the addon: a uv_close started then (or by a close() just
// before) would call into unmapped code, or leave the handle open. So each object
// that owns poll handles has a poll_guard: an async cleanup hook (N-API 8), which
// node waits for until it is removed, and it is removed only from the close
// callback of the object's last poll handle. The guard is allocated apart from its
// owner, so it outlives an owner that is finalized while its handles still close.

static inline void free_handle(uv_handle_t* h) { free(h); }

typedef struct {
  napi_async_cleanup_hook_handle hook; // NULL if it could not be added
  void (*close_owner)(void* owner);    // starts closing the owner, which calls close_polls
  void* owner;                         // NULL once the owner is closing
  int pending;                         // close callbacks still to come
} poll_guard;

static inline void poll_guard_hook(napi_async_cleanup_hook_handle handle, void* arg) {
  (void)handle; // the guard's own hook
  poll_guard* g = arg;
  // Still open: close it now. Already closing: its last close callback removes the hook.
  if (g->owner != NULL) g->close_owner(g->owner);
}

// A guard for `owner`, whose close_owner(owner) closes its polls with close_polls(guard, ...).
// NULL if out of memory (its polls are then closed without one).
static inline poll_guard* add_poll_guard(napi_env env, void (*close_owner)(void*), void* owner) {
  poll_guard* g = calloc(1, sizeof *g);
  if (g == NULL) return NULL;
  g->close_owner = close_owner;
  g->owner = owner;
  if (napi_add_async_cleanup_hook(env, poll_guard_hook, g, &g->hook) != napi_ok) g->hook = NULL;
  return g;
}

static inline void poll_guard_done(poll_guard* g) {
  napi_async_cleanup_hook_handle hook = g->hook;
  free(g);
  if (hook != NULL) napi_remove_async_cleanup_hook(hook); // node may go on tearing down after this
}

static inline void on_guarded_poll_closed(uv_handle_t* h) {
  poll_guard* g = h->data;
  free(h);
  if (--g->pending == 0) poll_guard_done(g);
}

// Stops and closes the owner's malloc'd poll handles (each freed once libuv is done
// with it, and set to NULL here), and gives the guard up: it removes its hook and
// frees itself after the last close callback. Call it once per guard; g may be NULL.
static inline void close_polls(poll_guard* g, uv_poll_t** polls, int n) {
  if (g != NULL) g->owner = NULL;
  for (int i = 0; i < n; i++) {
    uv_poll_t* p = polls[i];
    if (p == NULL) continue;
    polls[i] = NULL;
    uv_poll_stop(p);
    if (g != NULL) {
      p->data = g;
      g->pending++;
      uv_close((uv_handle_t*)p, on_guarded_poll_closed);
    } else {
      uv_close((uv_handle_t*)p, free_handle);
    }
  }
  if (g != NULL && g->pending == 0) poll_guard_done(g);
}

#endif // SOBANI_NAPI_HELPERS_H
