//! Datasets, preprocessing and the loader thread.

pub mod augment;
pub mod dataset;
pub mod loader;

pub use augment::Transform;
pub use dataset::{
    check_image_headers, load_cifar10, load_folder, load_folder_splits, load_idx_dir,
    load_idx_splits, Dataset, Pixels, FASHION_MNIST_DIR,
};
pub use loader::{batches_per_epoch, make_batch, Batch, Loader, LoaderConfig};
