# The benchmark's Node-API addon (echo server and load generator), built by
# src/io/native/build.cjs in a dev checkout (node-gyp run in bench/native/, output
# bench/native/build/Release/sobani_bench.node). It lives apart from the root
# binding.gyp so that the root build/Release/ holds the tracker's addon only.
{
  "includes": ["../../src/io/native/common.gypi"],
  "targets": [
    {
      "target_name": "sobani_bench",
      "sources": ["bench.c"],
      "libraries": ["-lpthread"]
    }
  ]
}
