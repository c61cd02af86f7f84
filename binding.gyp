# The tracker's Node-API addon in C, Linux only (recvmmsg/sendmmsg):
#   sobani_udp    the tracker's batched UDP socket (src/io/native/udp.c)
# The only target here, because node-gyp-build loads the first .node file it finds
# in build/Release. The npm package ships it prebuilt (prebuilds/, made by
# `src/io/native/build.cjs --prebuild` at prepack); the install script compiles it
# only where no prebuild loads. The bench's addon has its own bench/native/binding.gyp.
{
  "includes": ["src/io/native/common.gypi"],
  "targets": [
    {
      "target_name": "sobani_udp",
      "sources": ["src/io/native/udp.c"]
    }
  ]
}
