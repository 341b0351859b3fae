// Rotary position embedding, normal (GPT-J, pairs 2i/2i+1) and NeoX (pairs i/i+n_rot/2) layouts,
// with linear position scaling, YaRN frequency blending and optional per-frequency factors.
#include <algorithm>
#include <cmath>

#include "cpu/ops.h"

namespace lumen::cpu {

namespace {
// YaRN: the dimension range over which frequencies move from interpolated to extrapolated.
float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return n_dims * std::log(n_ctx_orig / (n_rot * 2.0f * float(M_PI))) / (2.0f * std::log(base));
}
}  // namespace

void op_rope(const OpCtx& c, Tensor* t) {
    const Tensor* a = t->src[0];
    const int32_t* pos = reinterpret_cast<const int32_t*>(c.ptr(t->src[1]));
    const float* factors = t->src[2] ? reinterpret_cast<const float*>(c.ptr(t->src[2])) : nullptr;
    const int n_rot = t->ip[0];
    const bool neox = t->ip[1] != 0;
    const int orig_ctx = t->ip[2];
    const float base = t->fp[0], freq_scale = t->fp[1], ext_factor = t->fp[2], attn_factor = t->fp[3];
    const float beta_fast = t->fp[4], beta_slow = t->fp[5];
    const int64_t head_dim = a->ne[0], n_head = a->ne[1], T = a->ne[2];

    float corr_lo = 0, corr_hi = 0;
    if (ext_factor != 0.0f) {
        corr_lo = std::max(0.0f, std::floor(yarn_corr_dim(n_rot, orig_ctx, beta_fast, base)));
        corr_hi = std::min(float(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, orig_ctx, beta_slow, base)));
    }
    const float theta_scale = std::pow(base, -2.0f / float(n_rot));

    int64_t b, e;
    c.range(T * n_head, b, e);
    for (int64_t r = b; r < e; r++) {
        const int64_t tok = r / n_head, h = r % n_head;
        const float* x = reinterpret_cast<const float*>(c.ptr(a) + size_t(tok) * a->nb[2] + size_t(h) * a->nb[1]);
        float* y = reinterpret_cast<float*>(c.ptr(t) + size_t(tok) * t->nb[2] + size_t(h) * t->nb[1]);
        float theta_extrap = float(pos[tok]);
        for (int i0 = 0; i0 < n_rot; i0 += 2) {
            float theta_e = theta_extrap / (factors ? factors[i0 / 2] : 1.0f);
            float theta = freq_scale * theta_e, mscale = attn_factor;
            if (ext_factor != 0.0f) {
                float ramp = 1.0f - std::min(1.0f, std::max(0.0f, (i0 / 2 - corr_lo) / std::max(0.001f, corr_hi - corr_lo)));
                float mix = ramp * ext_factor;
                theta = theta * (1 - mix) + theta_e * mix;
                mscale *= 1.0f + 0.1f * std::log(1.0f / freq_scale);
            }
            const float cs = std::cos(theta) * mscale, sn = std::sin(theta) * mscale;
            const int64_t i_a = neox ? i0 / 2 : i0, i_b = neox ? i0 / 2 + n_rot / 2 : i0 + 1;
            const float x0 = x[i_a], x1 = x[i_b];
            // The FMA contractions GCC makes of ggml's x0*cos - x1*sin and x0*sin + x1*cos.
            y[i_a] = std::fma(x0, cs, -(x1 * sn));
            y[i_b] = std::fma(x0, sn, x1 * cs);
            theta_extrap *= theta_scale;
        }
        for (int64_t i = n_rot; i < head_dim; i++) y[i] = x[i];
    }
}

}  // namespace lumen::cpu
