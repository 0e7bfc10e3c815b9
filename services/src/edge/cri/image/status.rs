//! ImageStatus: an image found by any of its names or its id (or an id prefix).

use super::*;

impl Cri {
    /// Finds an image by tag, digest reference or id; None when absent.
    pub async fn image_find(&self, spec: &str) -> Result<Option<ImageInfo>> {
        match lookup(spec)? {
            Lookup::Name(name) => {
                let rec = match self.images.get(self.ns.clone(), name).await {
                    Ok(r) => r,
                    Err(e) if e.kind() == Kind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let id = self.describe(&rec).await?.id;
                Ok(self.image_list().await?.into_iter().find(|i| i.id == id))
            }
            Lookup::Id(id) => {
                let all = self.image_list().await?;
                let hits: Vec<ImageInfo> =
                    all.into_iter().filter(|i| i.id.starts_with(&id)).collect();
                match hits.len() {
                    0 => Ok(None),
                    1 => Ok(hits.into_iter().next()),
                    _ => Err(Error::invalid(format!(
                        "image id prefix {spec:?} is ambiguous"
                    ))),
                }
            }
        }
    }
}
