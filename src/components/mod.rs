//! The page's sections, small components that take the [`crate::state::Project`] from context
//! and call its methods; they hold no state of the project themselves.

pub mod classes;
pub mod embedding_map;
pub mod fine_tune;
pub mod heatmap;
pub mod predict;
pub mod project_box;
pub mod recipe;
pub mod results;
pub mod training;

pub use classes::ClassesSection;
pub use embedding_map::EmbeddingMapSection;
pub use predict::PredictSection;
pub use project_box::ProjectSection;
pub use results::ResultsSection;
pub use training::TrainSection;
