# The tracker's Node-API addon in C, Linux only (recvmmsg/sendmmsg), built at
# install time by src/io/native/build.cjs; a failed build leaves the tracker on dgram.
#   sobani_udp    the tracker's batched UDP socket (src/io/native/udp.c)
# The bench's addon has its own bench/native/binding.gyp, so that build/Release/
# holds this one addon only.
{
  "includes": ["src/io/native/common.gypi"],
  "targets": [
    {
      "target_name": "sobani_udp",
      "sources": ["src/io/native/udp.c"]
    }
  ]
}
