# Compiler flags shared by both addons: ../../../binding.gyp (sobani_udp) and
# bench/native/binding.gyp (sobani_bench).
{
  "target_defaults": {
    "cflags!": ["-O3"],
    "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
  }
}
