{
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags": ["-fPIC", "-O3", "-fvisibility=hidden"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"]
  },
  "targets": [
    {
      "target_name": "xnorm",
      "sources": ["<!@(node scripts/sources.js base)"],
      "ldflags": ["-pthread"],
      "libraries": ["-ldl"],
      "conditions": [
        ["target_arch=='x64'", {"dependencies": ["xnorm_avx512", "xnorm_avx2"]}],
        ["target_arch=='arm64'", {
          "dependencies": ["xnorm_neon"],
          "cflags": ["-ffp-contract=off"]
        }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "xnorm_avx512",
          "type": "static_library",
          "sources": ["<!@(node scripts/sources.js avx512)"],
          "cflags": ["-Wno-maybe-uninitialized", "-Wno-uninitialized", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vpopcntdq", "-mavx2", "-mfma", "-mf16c", "-mpopcnt"]
        },
        {
          "target_name": "xnorm_avx2",
          "type": "static_library",
          "sources": ["<!@(node scripts/sources.js avx2)"],
          "cflags": ["-Wno-maybe-uninitialized", "-Wno-uninitialized", "-mavx2", "-mfma", "-mf16c", "-mpopcnt"]
        }
      ]
    }],
    ["target_arch=='arm64'", {
      "targets": [
        {
          "target_name": "xnorm_neon",
          "type": "static_library",
          "sources": ["<!@(node scripts/sources.js neon)"],
          "cflags": ["-Wno-maybe-uninitialized", "-Wno-uninitialized", "-ffp-contract=off"]
        }
      ]
    }]
  ]
}
