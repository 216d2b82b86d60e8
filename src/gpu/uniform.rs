//! Kernel parameter blocks: each kernel's `var<uniform> p: Params` is a `#[repr(C)]`
//! bytemuck struct on the Rust side, declared with [`uniform_block!`], which also records
//! its fields (name, byte offset, scalar type) and size. `tests/kernel_contract.rs`
//! reflects every WGSL module with naga and holds the WGSL struct against that record, so
//! a field added, dropped, renamed or reordered on one side only fails a test instead of
//! shifting every later parameter.

/// Scalar type of one field of a parameter block (WGSL `u32`, `i32`, `f32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    /// `u32`
    U32,
    /// `i32`
    I32,
    /// `f32`
    F32,
}

/// A Rust type that is one WGSL scalar (`u32`, `i32`, `f32`) or a `vec4` of one
/// (`[u32; 4]`, `[i32; 4]`, `[f32; 4]`: per-channel constants indexed in the shader).
pub trait UniformScalar {
    /// Its WGSL scalar type (of each lane for a vector).
    const SCALAR: Scalar;
    /// 1 for a scalar, 4 for a `vec4`.
    const LANES: usize = 1;
}

impl UniformScalar for u32 {
    const SCALAR: Scalar = Scalar::U32;
}
impl UniformScalar for i32 {
    const SCALAR: Scalar = Scalar::I32;
}
impl UniformScalar for f32 {
    const SCALAR: Scalar = Scalar::F32;
}
impl UniformScalar for [u32; 4] {
    const SCALAR: Scalar = Scalar::U32;
    const LANES: usize = 4;
}
impl UniformScalar for [i32; 4] {
    const SCALAR: Scalar = Scalar::I32;
    const LANES: usize = 4;
}
impl UniformScalar for [f32; 4] {
    const SCALAR: Scalar = Scalar::F32;
    const LANES: usize = 4;
}

/// One field of a parameter block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniformField {
    /// Field name (the WGSL member has the same name).
    pub name: &'static str,
    /// Byte offset in the block.
    pub offset: usize,
    /// Scalar type (of each lane for a vector).
    pub scalar: Scalar,
    /// 1 for a scalar, 4 for a `vec4` (16-byte aligned in WGSL: the reflection test holds
    /// the Rust offset to it, so pad before it with scalar fields).
    pub lanes: usize,
}

/// The layout of a parameter block as the Rust struct has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniformLayout {
    /// Rust type name.
    pub name: &'static str,
    /// Size in bytes.
    pub size: usize,
    /// Fields in declaration order.
    pub fields: &'static [UniformField],
}

/// A kernel parameter block: plain data uploaded byte for byte into the kernel's uniform
/// slot. Implemented by [`uniform_block!`]; do not implement it by hand.
pub trait Uniform: bytemuck::Pod {
    /// The block's layout.
    const LAYOUT: &'static UniformLayout;
}

/// Declare a kernel parameter block: a `#[repr(C)]` struct of `u32` / `i32` / `f32` fields
/// and `[T; 4]` fields for `vec4<T>` members (in the order of the WGSL `struct Params`)
/// that implements [`Uniform`]. The block must fit the 256-byte uniform slot (checked at
/// compile time).
///
/// ```ignore
/// uniform_block! {
///     /// Parameters of `act/forward.wgsl`.
///     pub(super) struct ActParams {
///         /// Elements.
///         pub n: u32,
///     }
/// }
/// ```
macro_rules! uniform_block {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        impl $crate::gpu::Uniform for $name {
            const LAYOUT: &'static $crate::gpu::UniformLayout = &$crate::gpu::UniformLayout {
                name: stringify!($name),
                size: ::core::mem::size_of::<$name>(),
                fields: &[$($crate::gpu::UniformField {
                    name: stringify!($field),
                    offset: ::core::mem::offset_of!($name, $field),
                    scalar: <$ty as $crate::gpu::UniformScalar>::SCALAR,
                    lanes: <$ty as $crate::gpu::UniformScalar>::LANES,
                }),*],
            };
        }

        const _: () = assert!(
            ::core::mem::size_of::<$name>() as u64 <= $crate::gpu::kernel::PARAMS_BYTES,
            "a kernel parameter block must fit its 256-byte uniform slot"
        );
    };
}
pub(crate) use uniform_block;
