{
  "variables": {
    "pfc_with_mpi%": "<!(node -p \"require('node:child_process').spawnSync('mpicc', ['--showme:version']).status === 0 ? 1 : 0\")"
  },
  "targets": [
    {
      "target_name": "pfc_nccl",
      "sources": ["native/nccl.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "libraries": ["-ldl"],
      "cflags_cc": ["-std=c++17", "-O2"]
    }
  ],
  "conditions": [
    ["pfc_with_mpi==1", {
      "targets": [
        {
          "target_name": "pfc_mpi",
          "sources": ["native/mpi.cc"],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
          "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"],
          "cflags_cc": ["-std=c++17", "-O2", "<!@(mpicc --showme:compile)"],
          "libraries": ["<!@(mpicc --showme:link)", "-ldl"]
        }
      ]
    }]
  ]
}
