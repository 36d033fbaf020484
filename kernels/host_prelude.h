// Host emulation of the CUDA C that the integrator kernel (kernels/integrate.cu) uses, so that
// the very source NVRTC compiles for a device also builds with a C++ compiler and runs on the
// CPU (src/backend/cuda/emulate.rs): the generated source goes between this prelude and
// kernels/host_entry.h.
//
// Everything lives in one namespace, so that the kernel's unqualified math calls find the
// overloads below and nothing else: as in CUDA, a float argument selects the float function
// (exp(float) is expf, never a promotion to double), and a call that mixes float and double
// does not compile. The thread and block indices are thread-local, so that several host
// threads can each run their own blocks.

#include <stddef.h>
#include <string.h>

namespace vpop_emulation {

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__

struct dim3 {
    unsigned x, y, z;
};
static thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define VPOP_MATH1(name, f, d)                                  \
    static inline float name(float x) { return f(x); }         \
    static inline double name(double x) { return d(x); }
#define VPOP_MATH2(name, f, d)                                            \
    static inline float name(float x, float y) { return f(x, y); }       \
    static inline double name(double x, double y) { return d(x, y); }

VPOP_MATH1(exp, __builtin_expf, __builtin_exp)
VPOP_MATH1(log, __builtin_logf, __builtin_log)
VPOP_MATH1(log10, __builtin_log10f, __builtin_log10)
VPOP_MATH1(sqrt, __builtin_sqrtf, __builtin_sqrt)
VPOP_MATH1(fabs, __builtin_fabsf, __builtin_fabs)
VPOP_MATH1(ceil, __builtin_ceilf, __builtin_ceil)
VPOP_MATH1(floor, __builtin_floorf, __builtin_floor)
VPOP_MATH1(tanh, __builtin_tanhf, __builtin_tanh)
VPOP_MATH1(atan, __builtin_atanf, __builtin_atan)
VPOP_MATH1(erf, __builtin_erff, __builtin_erf)
VPOP_MATH1(erfc, __builtin_erfcf, __builtin_erfc)
VPOP_MATH2(pow, __builtin_powf, __builtin_pow)
VPOP_MATH2(fmin, __builtin_fminf, __builtin_fmin)
VPOP_MATH2(fmax, __builtin_fmaxf, __builtin_fmax)
VPOP_MATH2(nextafter, __builtin_nextafterf, __builtin_nextafter)
static inline float fma(float x, float y, float z) { return __builtin_fmaf(x, y, z); }
static inline double fma(double x, double y, double z) { return __builtin_fma(x, y, z); }

#undef VPOP_MATH1
#undef VPOP_MATH2

static inline bool isfinite(float x) { return __builtin_isfinite(x); }
static inline bool isfinite(double x) { return __builtin_isfinite(x); }
static inline bool isnan(float x) { return __builtin_isnan(x); }
static inline bool isnan(double x) { return __builtin_isnan(x); }
static inline bool isinf(float x) { return __builtin_isinf(x); }
static inline bool isinf(double x) { return __builtin_isinf(x); }
static inline double nan(const char*) { return __builtin_nan(""); }

static inline float __int_as_float(int v) {
    float x;
    memcpy(&x, &v, sizeof x);
    return x;
}
static inline double __longlong_as_double(long long v) {
    double x;
    memcpy(&x, &v, sizeof x);
    return x;
}
template <typename T>
static inline T __ldg(const T* p) {
    return *p;
}

// The overloads keep the argument's type.
template <typename A, typename B>
struct vpop_same {
    static const bool value = false;
};
template <typename A>
struct vpop_same<A, A> {
    static const bool value = true;
};
static_assert(vpop_same<decltype(exp(1.0f)), float>::value, "exp(float) must be float");
static_assert(vpop_same<decltype(pow(1.0f, 2.0f)), float>::value, "pow(float) must be float");
static_assert(vpop_same<decltype(fmax(1.0f, 2.0f)), float>::value, "fmax(float) must be float");
static_assert(vpop_same<decltype(sqrt(1.0)), double>::value, "sqrt(double) must be double");
static_assert(sizeof(float) == 4 && sizeof(double) == 8 && sizeof(unsigned) == 4, "data model");

