/* torch-lstm's and numpy-lstm's time steps on the CPU: each step's elementwise work in one pass (cpu_steps.py
 * builds this; numpy_steps.py calls it too), and numpy-lstm's output-layer exponentials (exp2_rows).
 *
 * Shapes, one time step, row-major and contiguous: a (B, 4H) with the gate blocks i, f, c~, o side by side
 * in each row; everything else (B, H). The equations are docs/model.md's, as in eager_steps.py. Written so the
 * compiler vectorizes the inner loops (-O3 -fopenmp-simd) without -ffast-math: with it, GCC 12 links start-up
 * code into the library that switches the loading thread to flushing subnormals to zero, and a whole
 * training step ran about 1.35x slower in that process (docs/speed.md).
 */
#include <stdint.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* 2^f for |f| <= 1/2: a polynomial of degree 6, highest coefficient first (relative error below 2e-7) */
static const float EXP2_POLY[7] = {1.5353362e-4f, 1.3398874e-3f, 9.6181291e-3f, 5.5504109e-2f,
                                   2.4022651e-1f, 6.9314718e-1f, 1.0f};

static inline float exp2_poly(float f)
{
    float p = EXP2_POLY[0];
    for (int k = 1; k < 7; k++)
        p = p * f + EXP2_POLY[k];
    return p;
}

/* e^x as 2^n p(f), x log2(e) = n + f, |f| <= 1/2, p of degree 6 (relative error below 2e-7); x clamped
   to +-80, where the sigmoids below are 0 or 1 to float precision, so 2^n never leaves the normal range */
static inline float exp_approx(float x)
{
    x = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
    float y = x * 1.44269504088896341f;
    float n = __builtin_roundf(y);
    union { float f; int32_t i; } u = { exp2_poly(y - n) };
    u.i += (int32_t)n << 23;  /* times 2^n: add n to the exponent field */
    return u.f;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

/* Forward step t: a holds z = W_x x_t + b + W_h h_{t-1}, c~'s block doubled (so tanh(z) = 2 sigma(2z) - 1),
   and gets the activations i, f, c~, o in place; C_t = f C_{t-1} + i c~, tanh(C_t), h_t = o tanh(C_t). */
void forward_step(float *restrict a, const float *restrict c, float *restrict c_new, float *restrict tanh_c,
                  float *restrict h_new, int64_t B, int64_t H)
{
    for (int64_t b = 0; b < B; b++) {
        float *ab = a + b * 4 * H;
        int64_t r = b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            float i = sigmoid(ab[j]), f = sigmoid(ab[H + j]);
            float g = 2.0f * sigmoid(ab[2 * H + j]) - 1.0f, o = sigmoid(ab[3 * H + j]);
            float ct = f * c[r + j] + i * g;
            float tc = 2.0f * sigmoid(2.0f * ct) - 1.0f;
            ab[j] = i;
            ab[H + j] = f;
            ab[2 * H + j] = g;
            ab[3 * H + j] = o;
            c_new[r + j] = ct;
            tanh_c[r + j] = tc;
            h_new[r + j] = o * tc;
        }
    }
}

/* Backward step t: a (B, 4H) the step's i, f, c~, o; c_prev C_{t-1}; tanh_c tanh(C_t); dh dh_t (with the
   step's own output gradient); dc_in dC_{t+1} f_{t+1}. Writes d (B, 4H), the pre-activation deltas, and
   dc_out = dC_t f_t, where dC_t = dc_in + dh o tanh'(C_t). */
void backward_step(const float *restrict a, const float *restrict c_prev, const float *restrict tanh_c,
                   const float *restrict dh, const float *restrict dc_in, float *restrict d,
                   float *restrict dc_out, int64_t B, int64_t H)
{
    for (int64_t b = 0; b < B; b++) {
        const float *ab = a + b * 4 * H;
        float *db = d + b * 4 * H;
        int64_t r = b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            float i = ab[j], f = ab[H + j], g = ab[2 * H + j], o = ab[3 * H + j];
            float tc = tanh_c[r + j], dht = dh[r + j];
            float dc = dc_in[r + j] + dht * o * (1.0f - tc * tc);
            db[j] = dc * g * i * (1.0f - i);                 /* di_pre = dC c~ sigma'(i) */
            db[H + j] = dc * c_prev[r + j] * f * (1.0f - f); /* df_pre = dC C_{t-1} sigma'(f) */
            db[2 * H + j] = dc * i * (1.0f - g * g);         /* dc~_pre = dC i tanh'(c~) */
            db[3 * H + j] = dht * tc * o * (1.0f - o);       /* do_pre = dh tanh(C_t) sigma'(o) */
            dc_out[r + j] = dc * f;
        }
    }
}

/* 2^y as np.exp2 gives it, but 0 below 2^-126 (no subnormals) and inf above 2^127 */
static inline float exp2_approx(float y)
{
    float yc = y < -126.0f ? -126.0f : (y > 127.0f ? 127.0f : y);
    float n = __builtin_rintf(yc);
    union { float f; int32_t i; } u = { exp2_poly(yc - n) };
    u.i += (int32_t)n << 23;
    float e = y < -126.0f ? 0.0f : (y > 127.0f ? __builtin_inff() : u.f);
    return y != y ? y : e; /* NaN stays NaN */
}

/* numpy-lstm's output layer: x (rows, cols), base-2 logits, becomes 2^x in place, and sums (rows,) gets each
   row's sum, in one pass. With AVX-512 the vectors take scalef (p 2^n in one instruction, to inf or 0 through
   the subnormals out of float's range): about 0.3 ns an element here, against 0.45 for NumPy's exp2 and a
   BLAS row sum; the compiler's vectors of exp2_approx (its clamps and selects) are no faster than NumPy. */
void exp2_rows(float *restrict x, float *restrict sums, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * cols;
        int64_t c = 0;
        float s = 0.0f;
#ifdef __AVX512F__
        __m512 acc = _mm512_setzero_ps();
        for (; c + 16 <= cols; c += 16) {
            __m512 y = _mm512_loadu_ps(xr + c);
            __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512 f = _mm512_sub_ps(y, n), p = _mm512_set1_ps(EXP2_POLY[0]); /* exp2_poly, in vectors */
            for (int k = 1; k < 7; k++)
                p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_POLY[k]));
            __m512 e = _mm512_scalef_ps(p, n);
            _mm512_storeu_ps(xr + c, e);
            acc = _mm512_add_ps(acc, e);
        }
        s = _mm512_reduce_add_ps(acc);
#endif
#pragma omp simd reduction(+ : s)
        for (int64_t k = c; k < cols; k++) { /* the row's last cols % 16, or all of it without AVX-512 */
            float e = exp2_approx(xr[k]);
            xr[k] = e;
            s += e;
        }
        sums[r] = s;
    }
}
