// C = op(A) . op(B) (+ bias) (+ C) with A and B activations or activation gradients
// (act_t: f16 in the f16-storage variant) and C f32: a weight gradient x^T . dy, which
// stays f32 (parameters' gradients feed the f32 optimizer). A weight gradient has no bias:
// BIAS is 0 and binding 3 is a placeholder of A's type that is never read. Tiles, staging
// and bounds: gemm/gemm.inc.wgsl.
alias act_t = f32;
alias a_t = act_t;
alias b_t = act_t;
alias bias_t = act_t;
alias c_t = f32;
//!include gemm/gemm.inc.wgsl
