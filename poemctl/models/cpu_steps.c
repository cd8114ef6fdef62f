/* torch-lstm's and numpy-lstm's time steps on the CPU: each step's elementwise work in one pass (cpu_steps.py
 * builds this; numpy_steps.py calls it too).
 *
 * Shapes, one time step, row-major and contiguous: a (B, 4H) with the gate blocks i, f, c~, o side by side
 * in each row; everything else (B, H). The equations are SPEC.md's, as in eager_steps.py. Written so the
 * compiler vectorizes the inner loops (-O3 -fopenmp-simd) without -ffast-math: with it, GCC 12 links start-up
 * code into the library that switches the loading thread to flushing subnormals to zero, and a whole
 * training step ran about 1.35x slower in that process (docs/speed.md).
 */
#include <stdint.h>

/* e^x as 2^n p(f), x log2(e) = n + f, |f| <= 1/2, p of degree 6 (relative error below 2e-7); x clamped
   to +-80, where the sigmoids below are 0 or 1 to float precision, so 2^n never leaves the normal range */
static inline float exp_approx(float x)
{
    x = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
    float y = x * 1.44269504088896341f;
    float n = __builtin_roundf(y);
    float f = y - n;
    float p = 1.5353362e-4f;
    p = p * f + 1.3398874e-3f;
    p = p * f + 9.6181291e-3f;
    p = p * f + 5.5504109e-2f;
    p = p * f + 2.4022651e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
    union { float f; int32_t i; } u = { p };
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
