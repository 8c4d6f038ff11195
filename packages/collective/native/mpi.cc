// @pfc/collective MPI binding: MPI collectives on typed-array memory, run on the libuv thread pool so that the
// JavaScript event loop stays responsive. The JavaScript side (src/mpi.ts) issues one collective at a time.
#include <dlfcn.h>
#include <mpi.h>
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

MPI_Op g_max_nan_f32 = MPI_OP_NULL;
MPI_Op g_max_nan_f64 = MPI_OP_NULL;
bool g_initialized_here = false;

// max that propagates NaN (OpenMPI's MPI_MAX keeps whichever operand compares greater, which drops NaN).
template <typename T>
void MaxNan(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; i++) {
    if (std::isnan(a[i]) || std::isnan(b[i])) b[i] = std::isnan(b[i]) ? b[i] : a[i];
    else if (a[i] > b[i]) b[i] = a[i];
  }
}

// dtype codes shared with src/mpi.ts: 0 float32, 1 float64, 2 int32, 3 uint16 (raw fp16 bits; moved, never reduced here)
MPI_Datatype TypeOf(int code) {
  switch (code) {
    case 0: return MPI_FLOAT;
    case 1: return MPI_DOUBLE;
    case 2: return MPI_INT;
    default: return MPI_UINT16_T;
  }
}

MPI_Op OpOf(int dtype, int op) {
  if (op == 0) return MPI_SUM;
  if (dtype == 0) return g_max_nan_f32;
  if (dtype == 1) return g_max_nan_f64;
  return MPI_MAX;
}

std::string ErrorString(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, len);
}

struct View {
  void* data = nullptr;
  int length = 0;
};

View ViewOf(const Napi::Value& v) {
  View out;
  if (!v.IsTypedArray()) return out;
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  uint8_t* base = static_cast<uint8_t*>(t.ArrayBuffer().Data());
  out.data = base + t.ByteOffset();
  out.length = static_cast<int>(t.ElementLength());
  return out;
}

// One collective on the thread pool. Holds references to the arrays so they outlive the call; no data is copied.
class CollectiveWorker : public Napi::AsyncWorker {
 public:
  enum Kind { kAllReduce, kAllGatherCounts, kAllGatherV, kReduceScatter, kBcast, kBarrier };

  CollectiveWorker(Napi::Env env, Kind kind) : Napi::AsyncWorker(env), kind_(kind), deferred_(Napi::Promise::Deferred::New(env)) {}

  void Keep(const Napi::Value& v) { refs_.emplace_back(Napi::Persistent(v.As<Napi::Object>())); }

  void Execute() override {
    int rc = MPI_SUCCESS;
    switch (kind_) {
      case kAllReduce:
        rc = MPI_Allreduce(MPI_IN_PLACE, a_.data, a_.length, TypeOf(dtype_), OpOf(dtype_, op_), MPI_COMM_WORLD);
        break;
      case kAllGatherCounts:
        counts_.assign(size_, 0);
        rc = MPI_Allgather(&scalar_, 1, MPI_INT, counts_.data(), 1, MPI_INT, MPI_COMM_WORLD);
        break;
      case kAllGatherV: {
        displs_.assign(size_, 0);
        for (int r = 1; r < size_; r++) displs_[r] = displs_[r - 1] + counts_[r - 1];
        rc = MPI_Allgatherv(a_.data, a_.length, TypeOf(dtype_), b_.data, counts_.data(), displs_.data(), TypeOf(dtype_), MPI_COMM_WORLD);
        break;
      }
      case kReduceScatter:
        rc = MPI_Reduce_scatter(a_.data, b_.data, counts_.data(), TypeOf(dtype_), OpOf(dtype_, op_), MPI_COMM_WORLD);
        break;
      case kBcast:
        rc = MPI_Bcast(a_.data, a_.length, TypeOf(dtype_), scalar_, MPI_COMM_WORLD);
        break;
      case kBarrier:
        rc = MPI_Barrier(MPI_COMM_WORLD);
        break;
    }
    if (rc != MPI_SUCCESS) SetError(ErrorString(rc));
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (kind_ == kAllGatherCounts) {
      Napi::Array arr = Napi::Array::New(env, counts_.size());
      for (size_t i = 0; i < counts_.size(); i++) arr.Set(i, Napi::Number::New(env, counts_[i]));
      deferred_.Resolve(arr);
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  Napi::Promise Promise() { return deferred_.Promise(); }

  Kind kind_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> refs_;
  View a_, b_;
  int dtype_ = 0, op_ = 0, scalar_ = 0, size_ = 1;
  std::vector<int> counts_, displs_;
};

int WorldSize() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    // OpenMPI's plug-ins resolve libmpi symbols globally; Node loads addons RTLD_LOCAL, so promote libmpi first.
    dlopen("libmpi.so.40", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    dlopen("libmpi.so", RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
      Napi::Error::New(env, "MPI_Init_thread failed: " + ErrorString(rc)).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    g_initialized_here = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (g_max_nan_f32 == MPI_OP_NULL) {
    MPI_Op_create(&MaxNan<float>, 1, &g_max_nan_f32);
    MPI_Op_create(&MaxNan<double>, 1, &g_max_nan_f64);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int version = 0, subversion = 0;
  MPI_Get_version(&version, &subversion);
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int liblen = 0;
  MPI_Get_library_version(lib, &liblen);
  Napi::Object out = Napi::Object::New(env);
  out.Set("rank", rank);
  out.Set("size", WorldSize());
  out.Set("threadLevel", provided);
  out.Set("threadMultiple", provided >= MPI_THREAD_MULTIPLE);
  out.Set("version", std::to_string(version) + "." + std::to_string(subversion));
  out.Set("library", std::string(lib, liblen));
  return out;
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && g_initialized_here) {
    if (g_max_nan_f32 != MPI_OP_NULL) {
      MPI_Op_free(&g_max_nan_f32);
      MPI_Op_free(&g_max_nan_f64);
    }
    MPI_Finalize();
  }
  return info.Env().Undefined();
}

Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 1;
  MPI_Abort(MPI_COMM_WORLD, code);
  return info.Env().Undefined();
}

// allReduce(buf, dtype, op) -> Promise<void>, in place
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  auto* w = new CollectiveWorker(info.Env(), CollectiveWorker::kAllReduce);
  w->a_ = ViewOf(info[0]);
  w->Keep(info[0]);
  w->dtype_ = info[1].As<Napi::Number>().Int32Value();
  w->op_ = info[2].As<Napi::Number>().Int32Value();
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// allGatherCounts(n) -> Promise<number[]>
Napi::Value AllGatherCounts(const Napi::CallbackInfo& info) {
  auto* w = new CollectiveWorker(info.Env(), CollectiveWorker::kAllGatherCounts);
  w->scalar_ = info[0].As<Napi::Number>().Int32Value();
  w->size_ = WorldSize();
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

std::vector<int> IntsOf(const Napi::Value& v) {
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) out[i] = a.Get(i).As<Napi::Number>().Int32Value();
  return out;
}

// allGatherV(send, recv, dtype, counts) -> Promise<void>
Napi::Value AllGatherV(const Napi::CallbackInfo& info) {
  auto* w = new CollectiveWorker(info.Env(), CollectiveWorker::kAllGatherV);
  w->a_ = ViewOf(info[0]);
  w->b_ = ViewOf(info[1]);
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->dtype_ = info[2].As<Napi::Number>().Int32Value();
  w->counts_ = IntsOf(info[3]);
  w->size_ = WorldSize();
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// reduceScatter(send, recv, dtype, op, counts) -> Promise<void>
Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
  auto* w = new CollectiveWorker(info.Env(), CollectiveWorker::kReduceScatter);
  w->a_ = ViewOf(info[0]);
  w->b_ = ViewOf(info[1]);
  w->Keep(info[0]);
  w->Keep(info[1]);
  w->dtype_ = info[2].As<Napi::Number>().Int32Value();
  w->op_ = info[3].As<Napi::Number>().Int32Value();
  w->counts_ = IntsOf(info[4]);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// bcast(buf, dtype, root) -> Promise<void>
Napi::Value Bcast(const Napi::CallbackInfo& info) {
  auto* w = new CollectiveWorker(info.Env(), CollectiveWorker::kBcast);
  w->a_ = ViewOf(info[0]);
  w->Keep(info[0]);
  w->dtype_ = info[1].As<Napi::Number>().Int32Value();
  w->scalar_ = info[2].As<Napi::Number>().Int32Value();
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  auto* w = new CollectiveWorker(info.Env(), CollectiveWorker::kBarrier);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("allReduce", Napi::Function::New(env, AllReduce));
  exports.Set("allGatherCounts", Napi::Function::New(env, AllGatherCounts));
  exports.Set("allGatherV", Napi::Function::New(env, AllGatherV));
  exports.Set("reduceScatter", Napi::Function::New(env, ReduceScatter));
  exports.Set("bcast", Napi::Function::New(env, Bcast));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  return exports;
}

}  // namespace

NODE_API_MODULE(pfc_mpi, Module)
