//! RemoveImage: every name of an image.

use super::*;

impl Cri {
    /// Removes every name of the image; absent is not an error.
    pub async fn image_remove(&self, spec: &str) -> Result<()> {
        let Some(info) = self.image_find(spec).await? else {
            return Ok(());
        };
        for name in &info.names {
            match self.images.delete(self.ns.clone(), name.clone()).await {
                Ok(()) => {}
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
