// @pfc/collective NCCL binding. libnccl.so.2 and the CUDA runtime are loaded with dlopen at run time, so the addon
// builds on machines without CUDA and reports clearly when the libraries are missing. tfjs exposes no device
// pointers, so every collective stages host memory through a device buffer: H2D copy, NCCL call, D2H copy.
#include <dlfcn.h>
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

typedef int cudaError_t;
typedef void* cudaStream_t;
typedef void* ncclComm_t;
typedef int ncclResult_t;
struct ncclUniqueId {
  char internal[128];
};

struct Api {
  bool loaded = false;
  std::string error;
  cudaError_t (*cudaSetDevice)(int) = nullptr;
  cudaError_t (*cudaGetDeviceCount)(int*) = nullptr;
  cudaError_t (*cudaMalloc)(void**, size_t) = nullptr;
  cudaError_t (*cudaFree)(void*) = nullptr;
  cudaError_t (*cudaMemcpy)(void*, const void*, size_t, int) = nullptr;
  cudaError_t (*cudaStreamCreate)(cudaStream_t*) = nullptr;
  cudaError_t (*cudaStreamSynchronize)(cudaStream_t) = nullptr;
  const char* (*cudaGetErrorString)(cudaError_t) = nullptr;
  ncclResult_t (*ncclGetVersion)(int*) = nullptr;
  ncclResult_t (*ncclGetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*ncclCommInitRank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*ncclCommDestroy)(ncclComm_t) = nullptr;
  ncclResult_t (*ncclAllReduce)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*ncclAllGather)(const void*, void*, size_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*ncclReduceScatter)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*ncclBroadcast)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  const char* (*ncclGetErrorString)(ncclResult_t) = nullptr;
};

Api g_api;

const int kH2D = 1, kD2H = 2;

void* OpenFirst(const std::vector<std::string>& names, std::string* tried) {
  for (const auto& n : names) {
    void* h = dlopen(n.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (h) return h;
    const char* e = dlerror();
    *tried += "\n  " + n + ": " + (e ? e : "not found");
  }
  return nullptr;
}

template <typename F>
bool Sym(void* lib, const char* name, F* out, std::string* err) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) *err += std::string("\n  missing symbol ") + name;
  return *out != nullptr;
}

bool Load() {
  if (g_api.loaded) return true;
  std::string tried;
  void* cuda = OpenFirst({"libcudart.so", "libcudart.so.12", "libcudart.so.11.0"}, &tried);
  void* nccl = OpenFirst({"libnccl.so.2", "libnccl.so"}, &tried);
  if (!cuda || !nccl) {
    g_api.error = std::string(!cuda ? "the CUDA runtime (libcudart)" : "libnccl.so.2") + " could not be loaded:" + tried;
    return false;
  }
  std::string err;
  bool ok = Sym(cuda, "cudaSetDevice", &g_api.cudaSetDevice, &err) & Sym(cuda, "cudaGetDeviceCount", &g_api.cudaGetDeviceCount, &err) &
            Sym(cuda, "cudaMalloc", &g_api.cudaMalloc, &err) & Sym(cuda, "cudaFree", &g_api.cudaFree, &err) &
            Sym(cuda, "cudaMemcpy", &g_api.cudaMemcpy, &err) & Sym(cuda, "cudaStreamCreate", &g_api.cudaStreamCreate, &err) &
            Sym(cuda, "cudaStreamSynchronize", &g_api.cudaStreamSynchronize, &err) & Sym(cuda, "cudaGetErrorString", &g_api.cudaGetErrorString, &err) &
            Sym(nccl, "ncclGetVersion", &g_api.ncclGetVersion, &err) & Sym(nccl, "ncclGetUniqueId", &g_api.ncclGetUniqueId, &err) &
            Sym(nccl, "ncclCommInitRank", &g_api.ncclCommInitRank, &err) & Sym(nccl, "ncclCommDestroy", &g_api.ncclCommDestroy, &err) &
            Sym(nccl, "ncclAllReduce", &g_api.ncclAllReduce, &err) & Sym(nccl, "ncclAllGather", &g_api.ncclAllGather, &err) &
            Sym(nccl, "ncclReduceScatter", &g_api.ncclReduceScatter, &err) & Sym(nccl, "ncclBroadcast", &g_api.ncclBroadcast, &err) &
            Sym(nccl, "ncclGetErrorString", &g_api.ncclGetErrorString, &err);
  if (!ok) {
    g_api.error = "NCCL or CUDA runtime lacks expected symbols:" + err;
    return false;
  }
  g_api.loaded = true;
  return true;
}

// dtype codes shared with src/nccl.ts: 0 float32, 1 float64, 2 int32, 3 float16
int NcclType(int code) {
  static const int types[] = {7 /* ncclFloat32 */, 8 /* ncclFloat64 */, 2 /* ncclInt32 */, 6 /* ncclFloat16 */};
  return types[code & 3];
}
size_t ElemBytes(int code) {
  static const size_t bytes[] = {4, 8, 4, 2};
  return bytes[code & 3];
}

struct Comm {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  void* dbuf = nullptr;
  size_t dbytes = 0;
};

std::string CudaErr(cudaError_t e) { return g_api.cudaGetErrorString ? g_api.cudaGetErrorString(e) : std::to_string(e); }
std::string NcclErr(ncclResult_t e) { return g_api.ncclGetErrorString ? g_api.ncclGetErrorString(e) : std::to_string(e); }

#define CUDA_OR_FAIL(call)                                   \
  do {                                                       \
    cudaError_t e_ = (call);                                 \
    if (e_ != 0) return std::string(#call ": ") + CudaErr(e_); \
  } while (0)
#define NCCL_OR_FAIL(call)                                   \
  do {                                                       \
    ncclResult_t e_ = (call);                                \
    if (e_ != 0) return std::string(#call ": ") + NcclErr(e_); \
  } while (0)

std::string Reserve(Comm* c, size_t bytes) {
  if (bytes <= c->dbytes) return "";
  if (c->dbuf) g_api.cudaFree(c->dbuf);
  c->dbuf = nullptr;
  c->dbytes = 0;
  CUDA_OR_FAIL(g_api.cudaMalloc(&c->dbuf, bytes));
  c->dbytes = bytes;
  return "";
}

struct View {
  void* data = nullptr;
  size_t length = 0;
};
View ViewOf(const Napi::Value& v) {
  View out;
  if (!v.IsTypedArray()) return out;
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  out.data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  out.length = t.ElementLength();
  return out;
}

class NcclWorker : public Napi::AsyncWorker {
 public:
  enum Kind { kAllReduce, kAllGather, kReduceScatter, kBroadcast };
  NcclWorker(Napi::Env env, Kind kind, Comm* comm) : Napi::AsyncWorker(env), kind_(kind), comm_(comm), deferred_(Napi::Promise::Deferred::New(env)) {}
  void Keep(const Napi::Value& v) { refs_.emplace_back(Napi::Persistent(v.As<Napi::Object>())); }

  // Stages through one device buffer: [send | recv] for out-of-place collectives.
  std::string Run() {
    Comm* c = comm_;
    CUDA_OR_FAIL(g_api.cudaSetDevice(c->device));
    size_t eb = ElemBytes(dtype_);
    size_t sendBytes = a_.length * eb;
    size_t recvBytes = (kind_ == kAllReduce || kind_ == kBroadcast) ? 0 : b_.length * eb;
    std::string r = Reserve(c, sendBytes + recvBytes + 256);
    if (!r.empty()) return r;
    char* dsend = static_cast<char*>(c->dbuf);
    char* drecv = dsend + ((sendBytes + 255) / 256) * 256;
    if (sendBytes) CUDA_OR_FAIL(g_api.cudaMemcpy(dsend, a_.data, sendBytes, kH2D));
    int t = NcclType(dtype_);
    switch (kind_) {
      case kAllReduce:
        NCCL_OR_FAIL(g_api.ncclAllReduce(dsend, dsend, a_.length, t, op_, c->comm, c->stream));
        break;
      case kBroadcast:
        NCCL_OR_FAIL(g_api.ncclBroadcast(dsend, dsend, a_.length, t, root_, c->comm, c->stream));
        break;
      case kAllGather:
        NCCL_OR_FAIL(g_api.ncclAllGather(dsend, drecv, a_.length, t, c->comm, c->stream));
        break;
      case kReduceScatter:
        NCCL_OR_FAIL(g_api.ncclReduceScatter(dsend, drecv, b_.length, t, op_, c->comm, c->stream));
        break;
    }
    CUDA_OR_FAIL(g_api.cudaStreamSynchronize(c->stream));
    if (kind_ == kAllReduce || kind_ == kBroadcast) {
      if (sendBytes) CUDA_OR_FAIL(g_api.cudaMemcpy(a_.data, dsend, sendBytes, kD2H));
    } else if (recvBytes) {
      CUDA_OR_FAIL(g_api.cudaMemcpy(b_.data, drecv, recvBytes, kD2H));
    }
    return "";
  }
  void Execute() override {
    std::string e = Run();
    if (!e.empty()) SetError(e);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  Kind kind_;
  Comm* comm_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
  View a_, b_;
  int dtype_ = 0, op_ = 0, root_ = 0;
};

Napi::Value Available(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  bool ok = Load();
  out.Set("ok", ok);
  if (!ok) {
    out.Set("error", g_api.error);
    return out;
  }
  int version = 0, devices = 0;
  g_api.ncclGetVersion(&version);
  cudaError_t e = g_api.cudaGetDeviceCount(&devices);
  out.Set("ncclVersion", version);
  out.Set("devices", e == 0 ? devices : 0);
  if (e != 0) out.Set("error", "cudaGetDeviceCount: " + CudaErr(e));
  return out;
}

Napi::Value UniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Load()) {
    Napi::Error::New(env, g_api.error).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  ncclUniqueId id;
  ncclResult_t r = g_api.ncclGetUniqueId(&id);
  if (r != 0) {
    Napi::Error::New(env, "ncclGetUniqueId: " + NcclErr(r)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array out = Napi::Uint8Array::New(env, sizeof(id.internal));
  std::memcpy(out.Data(), id.internal, sizeof(id.internal));
  return out;
}

// initRank(id: Uint8Array(128), nranks, rank, device) -> External<Comm> (blocking: every rank must call it)
Napi::Value InitRank(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!Load()) {
    Napi::Error::New(env, g_api.error).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array idArr = info[0].As<Napi::Uint8Array>();
  ncclUniqueId id;
  std::memcpy(id.internal, idArr.Data(), sizeof(id.internal));
  int nranks = info[1].As<Napi::Number>().Int32Value();
  int rank = info[2].As<Napi::Number>().Int32Value();
  auto* c = new Comm();
  c->device = info[3].As<Napi::Number>().Int32Value();
  std::string err;
  cudaError_t ce = g_api.cudaSetDevice(c->device);
  if (ce != 0) err = "cudaSetDevice(" + std::to_string(c->device) + "): " + CudaErr(ce);
  if (err.empty() && (ce = g_api.cudaStreamCreate(&c->stream)) != 0) err = "cudaStreamCreate: " + CudaErr(ce);
  ncclResult_t nr = 0;
  if (err.empty() && (nr = g_api.ncclCommInitRank(&c->comm, nranks, id, rank)) != 0) err = "ncclCommInitRank: " + NcclErr(nr);
  if (!err.empty()) {
    delete c;
    Napi::Error::New(env, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::External<Comm>::New(env, c);
}

Napi::Value Destroy(const Napi::CallbackInfo& info) {
  Comm* c = info[0].As<Napi::External<Comm>>().Data();
  if (c && c->comm) {
    g_api.cudaSetDevice(c->device);
    if (c->dbuf) g_api.cudaFree(c->dbuf);
    g_api.ncclCommDestroy(c->comm);
    c->comm = nullptr;
    c->dbuf = nullptr;
  }
  return info.Env().Undefined();
}

// collective(kind, comm, a, b|null, dtype, op, root) -> Promise<void>
Napi::Value Collective(const Napi::CallbackInfo& info) {
  auto kind = static_cast<NcclWorker::Kind>(info[0].As<Napi::Number>().Int32Value());
  Comm* c = info[1].As<Napi::External<Comm>>().Data();
  auto* w = new NcclWorker(info.Env(), kind, c);
  w->a_ = ViewOf(info[2]);
  w->Keep(info[2]);
  if (info[3].IsTypedArray()) {
    w->b_ = ViewOf(info[3]);
    w->Keep(info[3]);
  }
  w->dtype_ = info[4].As<Napi::Number>().Int32Value();
  w->op_ = info[5].As<Napi::Number>().Int32Value();
  w->root_ = info[6].As<Napi::Number>().Int32Value();
  Napi::Promise p = w->deferred_.Promise();
  w->Queue();
  return p;
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("available", Napi::Function::New(env, Available));
  exports.Set("uniqueId", Napi::Function::New(env, UniqueId));
  exports.Set("initRank", Napi::Function::New(env, InitRank));
  exports.Set("destroy", Napi::Function::New(env, Destroy));
  exports.Set("collective", Napi::Function::New(env, Collective));
  return exports;
}

}  // namespace

NODE_API_MODULE(pfc_nccl, Module)
