// C = op(A) . op(B) (+ bias) (+ C) with A and C activations (act_t: f16 in the
// f16-storage variant) and B, the bias parameters (f32): the forward and the data gradient
// of linear layers and 1x1 convolutions (x . W, dy . W^T), and every f32 product.
// Tiles, staging and bounds: gemm/gemm.inc.wgsl.
alias act_t = f32;
alias a_t = act_t;
alias b_t = f32;
alias bias_t = f32;
alias c_t = act_t;
//!include gemm/gemm.inc.wgsl
