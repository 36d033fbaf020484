// Operation counting for the emulated kernel (src/backend/cuda/emulate.rs, counting builds):
// goes after kernels/host_prelude.h, inside its namespace, and the generated source then takes
// `real` to be vpop_counted<float> or vpop_counted<double> — a number of the same size and
// layout that counts every arithmetic operation done with it, by kind, in the host thread's
// counters. The kernel itself is unchanged: this is how many operations the very source that
// NVRTC compiles performs per subject.
//
// Kinds: additions and subtractions, multiplications, divisions, fused multiply-adds (two
// floating-point operations each), square roots, transcendental functions (exp, log, log10,
// pow, tanh, atan, erf, erfc), comparisons (including fmin and fmax), and the rest (negations,
// fabs, ceil, floor, nextafter, finiteness tests). Conversions are not operations.

enum VpopOp { VPOP_ADD, VPOP_MUL, VPOP_DIV, VPOP_FMA, VPOP_SQRT, VPOP_TRANSC, VPOP_CMP, VPOP_OTHER, VPOP_KINDS };
static thread_local unsigned long long vpop_ops[VPOP_KINDS];

template <typename T> struct vpop_is_arith { static const bool value = false; };
template <> struct vpop_is_arith<float> { static const bool value = true; };
template <> struct vpop_is_arith<double> { static const bool value = true; };
template <> struct vpop_is_arith<int> { static const bool value = true; };
template <> struct vpop_is_arith<unsigned> { static const bool value = true; };
template <> struct vpop_is_arith<long> { static const bool value = true; };
template <> struct vpop_is_arith<unsigned long> { static const bool value = true; };
template <> struct vpop_is_arith<long long> { static const bool value = true; };
template <> struct vpop_is_arith<unsigned long long> { static const bool value = true; };
template <bool B, typename R = void> struct vpop_if {};
template <typename R> struct vpop_if<true, R> { typedef R type; };

template <typename T>
struct vpop_counted {
    T v;
    vpop_counted() = default;
    template <typename U, typename = typename vpop_if<vpop_is_arith<U>::value>::type>
    vpop_counted(U x) : v((T)x) {}
    template <typename U, typename = typename vpop_if<vpop_is_arith<U>::value>::type>
    explicit operator U() const { return (U)v; }

    vpop_counted& operator+=(vpop_counted o) { vpop_ops[VPOP_ADD]++; v += o.v; return *this; }
    vpop_counted& operator-=(vpop_counted o) { vpop_ops[VPOP_ADD]++; v -= o.v; return *this; }
    vpop_counted& operator*=(vpop_counted o) { vpop_ops[VPOP_MUL]++; v *= o.v; return *this; }
    vpop_counted& operator/=(vpop_counted o) { vpop_ops[VPOP_DIV]++; v /= o.v; return *this; }
    vpop_counted operator-() const { vpop_ops[VPOP_OTHER]++; return vpop_counted(-v); }
    vpop_counted operator+() const { return *this; }
};

static_assert(sizeof(vpop_counted<float>) == 4 && sizeof(vpop_counted<double>) == 8, "layout");

#define VPOP_BINARY(op, kind)                                                               \
    template <typename T>                                                                   \
    static inline vpop_counted<T> operator op(vpop_counted<T> a, vpop_counted<T> b) {       \
        vpop_ops[kind]++;                                                                   \
        return vpop_counted<T>(a.v op b.v);                                                 \
    }                                                                                       \
    template <typename T, typename U,                                                       \
              typename = typename vpop_if<vpop_is_arith<U>::value>::type>                  \
    static inline vpop_counted<T> operator op(vpop_counted<T> a, U b) {                     \
        vpop_ops[kind]++;                                                                   \
        return vpop_counted<T>(a.v op (T)b);                                                \
    }                                                                                       \
    template <typename T, typename U,                                                       \
              typename = typename vpop_if<vpop_is_arith<U>::value>::type>                  \
    static inline vpop_counted<T> operator op(U a, vpop_counted<T> b) {                     \
        vpop_ops[kind]++;                                                                   \
        return vpop_counted<T>((T)a op b.v);                                                \
    }
VPOP_BINARY(+, VPOP_ADD)
VPOP_BINARY(-, VPOP_ADD)
VPOP_BINARY(*, VPOP_MUL)
VPOP_BINARY(/, VPOP_DIV)
#undef VPOP_BINARY

#define VPOP_COMPARE(op)                                                                    \
    template <typename T>                                                                   \
    static inline bool operator op(vpop_counted<T> a, vpop_counted<T> b) {                  \
        vpop_ops[VPOP_CMP]++;                                                               \
        return a.v op b.v;                                                                  \
    }                                                                                       \
    template <typename T, typename U,                                                       \
              typename = typename vpop_if<vpop_is_arith<U>::value>::type>                  \
    static inline bool operator op(vpop_counted<T> a, U b) {                                \
        vpop_ops[VPOP_CMP]++;                                                               \
        return a.v op (T)b;                                                                 \
    }                                                                                       \
    template <typename T, typename U,                                                       \
              typename = typename vpop_if<vpop_is_arith<U>::value>::type>                  \
    static inline bool operator op(U a, vpop_counted<T> b) {                                \
        vpop_ops[VPOP_CMP]++;                                                               \
        return (T)a op b.v;                                                                 \
    }
VPOP_COMPARE(<)
VPOP_COMPARE(>)
VPOP_COMPARE(<=)
VPOP_COMPARE(>=)
VPOP_COMPARE(==)
VPOP_COMPARE(!=)
#undef VPOP_COMPARE

#define VPOP_MATH1(name, kind)                                                              \
    template <typename T>                                                                   \
    static inline vpop_counted<T> name(vpop_counted<T> x) {                                 \
        vpop_ops[kind]++;                                                                   \
        return vpop_counted<T>(name(x.v));                                                  \
    }
VPOP_MATH1(exp, VPOP_TRANSC)
VPOP_MATH1(log, VPOP_TRANSC)
VPOP_MATH1(log10, VPOP_TRANSC)
VPOP_MATH1(tanh, VPOP_TRANSC)
VPOP_MATH1(atan, VPOP_TRANSC)
VPOP_MATH1(erf, VPOP_TRANSC)
VPOP_MATH1(erfc, VPOP_TRANSC)
VPOP_MATH1(sqrt, VPOP_SQRT)
VPOP_MATH1(fabs, VPOP_OTHER)
VPOP_MATH1(ceil, VPOP_OTHER)
VPOP_MATH1(floor, VPOP_OTHER)
#undef VPOP_MATH1

#define VPOP_MATH2(name, kind)                                                              \
    template <typename T>                                                                   \
    static inline vpop_counted<T> name(vpop_counted<T> x, vpop_counted<T> y) {              \
        vpop_ops[kind]++;                                                                   \
        return vpop_counted<T>(name(x.v, y.v));                                             \
    }
VPOP_MATH2(pow, VPOP_TRANSC)
VPOP_MATH2(fmin, VPOP_CMP)
VPOP_MATH2(fmax, VPOP_CMP)
VPOP_MATH2(nextafter, VPOP_OTHER)
#undef VPOP_MATH2

template <typename T>
static inline vpop_counted<T> fma(vpop_counted<T> x, vpop_counted<T> y, vpop_counted<T> z) {
    vpop_ops[VPOP_FMA]++;
    return vpop_counted<T>(fma(x.v, y.v, z.v));
}
template <typename T>
static inline bool isfinite(vpop_counted<T> x) { vpop_ops[VPOP_OTHER]++; return isfinite(x.v); }
template <typename T>
static inline bool isnan(vpop_counted<T> x) { vpop_ops[VPOP_OTHER]++; return isnan(x.v); }
template <typename T>
static inline bool isinf(vpop_counted<T> x) { vpop_ops[VPOP_OTHER]++; return isinf(x.v); }

// The calling host thread's counts since the last call, then zeroed.
extern "C" __attribute__((visibility("default"))) void vpop_emulate_take_counts(
    unsigned long long* out) {
    for (int k = 0; k < VPOP_KINDS; k++) {
        out[k] = vpop_ops[k];
        vpop_ops[k] = 0;
    }
}
