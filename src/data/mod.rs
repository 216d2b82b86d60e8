//! Datasets, preprocessing and the loader thread.

pub mod augment;
pub mod dataset;
pub mod loader;

pub use augment::Transform;
pub use dataset::{load_cifar10, load_folder, load_idx_dir, Dataset, Pixels, FASHION_MNIST_DIR};
pub use loader::{batches_per_epoch, make_batch, Batch, Loader, LoaderConfig};
