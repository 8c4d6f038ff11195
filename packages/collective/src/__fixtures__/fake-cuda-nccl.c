/*
 * Stand-ins for libcudart and libnccl.so.2 (the same file is built as both), so that the real NCCL binding
 * (native/nccl.cc) runs on a machine without a GPU: "device" memory is host memory, one rank. Every call is
 * appended to $FAKE_NCCL_LOG as one line; $FAKE_NCCL_FAIL names a function that returns an error instead.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void logf_(const char* fmt, ...) {
  const char* path = getenv("FAKE_NCCL_LOG");
  if (!path) return;
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  line[n++] = '\n';
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    (void)!write(fd, line, n);
    close(fd);
  }
}
static int fails(const char* fn) {
  const char* f = getenv("FAKE_NCCL_FAIL");
  return f && strcmp(f, fn) == 0;
}
static size_t elem(int t) { return t == 6 ? 2 : (t == 8 ? 8 : 4); } /* ncclFloat16 6, ncclFloat64 8, else 4 bytes */

/* CUDA runtime */
int cudaSetDevice(int d) { logf_("cudaSetDevice %d", d); return 0; }
int cudaGetDeviceCount(int* n) { *n = 1; return 0; }
int cudaMalloc(void** p, size_t bytes) { logf_("cudaMalloc %zu", bytes); *p = malloc(bytes); return *p ? 0 : 2; }
int cudaFree(void* p) { logf_("cudaFree"); free(p); return 0; }
int cudaMemcpy(void* dst, const void* src, size_t bytes, int kind) {
  logf_("cudaMemcpy %s %zu", kind == 1 ? "H2D" : kind == 2 ? "D2H" : "other", bytes);
  memcpy(dst, src, bytes);
  return 0;
}
int cudaStreamCreate(void** s) { *s = (void*)1; return 0; }
int cudaStreamSynchronize(void* s) { (void)s; logf_("cudaStreamSynchronize"); return 0; }
const char* cudaGetErrorString(int e) { return e == 2 ? "out of memory" : "cuda error"; }

/* NCCL, one rank: reductions are identities, gathers copies */
int ncclGetVersion(int* v) { *v = 22105; return 0; }
typedef struct { char internal[128]; } ncclUniqueId; /* passed by value, as in nccl.h */
int ncclGetUniqueId(ncclUniqueId* id) { memset(id->internal, 7, 128); return 0; }
int ncclCommInitRank(void** comm, int nranks, ncclUniqueId id, int rank) {
  logf_("ncclCommInitRank nranks=%d rank=%d id[0]=%d id[127]=%d", nranks, rank, id.internal[0], id.internal[127]);
  *comm = (void*)1;
  return nranks == 1 ? 0 : 4; /* ncclInvalidArgument */
}
int ncclCommDestroy(void* c) { (void)c; logf_("ncclCommDestroy"); return 0; }
int ncclAllReduce(const void* s, void* r, size_t n, int t, int op, void* c, void* st) {
  (void)c; (void)st;
  logf_("ncclAllReduce count=%zu type=%d op=%d inplace=%d", n, t, op, s == r);
  if (fails("ncclAllReduce")) return 1; /* ncclUnhandledCudaError */
  memmove(r, s, n * elem(t));
  return 0;
}
int ncclBroadcast(const void* s, void* r, size_t n, int t, int root, void* c, void* st) {
  (void)c; (void)st;
  logf_("ncclBroadcast count=%zu type=%d root=%d inplace=%d", n, t, root, s == r);
  memmove(r, s, n * elem(t));
  return 0;
}
int ncclAllGather(const void* s, void* r, size_t n, int t, void* c, void* st) {
  (void)c; (void)st;
  logf_("ncclAllGather count=%zu type=%d", n, t);
  memmove(r, s, n * elem(t));
  return 0;
}
int ncclReduceScatter(const void* s, void* r, size_t n, int t, int op, void* c, void* st) {
  (void)c; (void)st;
  logf_("ncclReduceScatter count=%zu type=%d op=%d", n, t, op);
  memmove(r, s, n * elem(t));
  return 0;
}
const char* ncclGetErrorString(int e) { return e == 1 ? "unhandled cuda error" : e == 4 ? "invalid argument" : "nccl error"; }
