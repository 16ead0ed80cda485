{
  "targets": [
    {
      "target_name": "tocfs_fuse_dev",
      "sources": ["fuse_dev.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags!": ["-O3"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "cflags_c": ["-std=gnu11"]
    }
  ]
}
