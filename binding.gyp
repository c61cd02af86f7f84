# Two Node-API addons in C, Linux only (recvmmsg/sendmmsg). Built at install
# time by src/io/native/build.cjs; a failed build leaves the tracker on dgram.
#   sobani_udp    the tracker's batched UDP socket
#   sobani_bench  the benchmark's echo server and load generator, built only when
#                 its source is there (a Docker build context leaves bench/ out)
{
  "variables": {
    "sobani_with_bench%": "<!(test -f bench/native/bench.c && echo 1 || echo 0)"
  },
  "target_defaults": {
    "cflags!": ["-O3"],
    "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
  },
  "targets": [
    {
      "target_name": "sobani_udp",
      "sources": ["src/io/native/udp.c"]
    }
  ],
  "conditions": [
    ["sobani_with_bench==1", {
      "targets": [
        {
          "target_name": "sobani_bench",
          "sources": ["bench/native/bench.c"],
          "libraries": ["-lpthread"]
        }
      ]
    }]
  ]
}
