//! Datasets, preprocessing, image decoding and the loader's worker pool.

pub mod augment;
pub mod builder;
pub mod dataset;
pub mod decode;
pub mod loader;
pub mod synth;

pub use augment::Transform;
pub use builder::{batch_bytes, BatchBuilder, StageTimes};
pub use dataset::{
    check_image_headers, load_cifar10, load_folder, load_folder_splits, load_idx_dir,
    load_idx_splits, Dataset, Pixels, FASHION_MNIST_DIR,
};
pub use loader::{
    batches_per_epoch, default_workers, epoch_order, make_batch, Batch, Loader, LoaderConfig,
};
