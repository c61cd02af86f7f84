// An LD_PRELOAD shim that makes chosen libc calls fail, so that the native addon's
// error paths run for real in a child process (napi_* calls cannot be interposed:
// node itself defines them). Compiled by test/helpers/fault-shim.ts:
//   cc -shared -fPIC -o fault-shim.so fault-shim.c -ldl
// Faults, chosen by environment variables (absent: the call goes through):
//   SOBANI_FAULT_V6ONLY=1        setsockopt(IPPROTO_IPV6, IPV6_V6ONLY) fails with ENOPROTOOPT
//   SOBANI_FAULT_RECVMMSG=<n>    the first n recvmmsg calls fail with ENOMEM
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

int setsockopt(int fd, int level, int name, const void* value, socklen_t len) {
  static int (*real)(int, int, int, const void*, socklen_t);
  if (real == NULL) real = (int (*)(int, int, int, const void*, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
  if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && getenv("SOBANI_FAULT_V6ONLY") != NULL) {
    errno = ENOPROTOOPT;
    return -1;
  }
  return real(fd, level, name, value, len);
}

int recvmmsg(int fd, struct mmsghdr* msgs, unsigned int vlen, int flags, struct timespec* timeout) {
  static int (*real)(int, struct mmsghdr*, unsigned int, int, struct timespec*);
  static long failures = -1;
  if (real == NULL) real = (int (*)(int, struct mmsghdr*, unsigned int, int, struct timespec*))dlsym(RTLD_NEXT, "recvmmsg");
  if (failures < 0) {
    const char* n = getenv("SOBANI_FAULT_RECVMMSG");
    failures = n != NULL ? strtol(n, NULL, 10) : 0;
  }
  if (failures > 0) {
    failures--;
    errno = ENOMEM;
    return -1;
  }
  return real(fd, msgs, vlen, flags, timeout);
}
