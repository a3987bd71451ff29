//! ListImages: the query parameters sdc-imgapi accepts, the filters they
//! select, and paging with an inclusive `marker` (`imgapi.md` 3.2).

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imgadm_engine::ids::ImageUuid;
use serde_json::Value;

use super::routes::{ApiError, ChannelScope, Params};
use super::store::{Store, StoredImage};

pub(super) struct ListQuery {
    /// False for the states an anonymous caller of a public server never
    /// sees (`unactivated`, `disabled`, ...): those lists are empty.
    shows_active_images: bool,
    name: Option<TextMatch>,
    version: Option<TextMatch>,
    owner: Option<String>,
    os: Option<String>,
    image_type: Option<TypeMatch>,
    public: Option<bool>,
    tags: Vec<(String, String)>,
    marker: Option<Marker>,
    /// `None`: no limit given, or `limit=0`.
    limit: Option<usize>,
    newest_first: bool,
}

enum TextMatch {
    Exact(String),
    /// `~text`: case-sensitive substring.
    Contains(String),
}

enum TypeMatch {
    Is(String),
    /// `!type`
    IsNot(String),
}

enum Marker {
    Image(ImageUuid),
    Time(DateTime<Utc>),
}

impl TextMatch {
    fn parse(value: &str) -> TextMatch {
        match value.strip_prefix('~') {
            Some(part) => TextMatch::Contains(part.into()),
            None => TextMatch::Exact(value.into()),
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (TextMatch::Exact(wanted), Some(value)) => value == wanted,
            (TextMatch::Contains(part), Some(value)) => value.contains(part.as_str()),
            (_, None) => false,
        }
    }
}

impl ListQuery {
    pub fn parse(params: &Params) -> Result<ListQuery, ApiError> {
        let shows_active_images = match params.get("state").unwrap_or("active") {
            // `all` silently means active-only for an anonymous caller.
            "active" | "all" => true,
            "disabled" | "unactivated" | "creating" | "failed" => false,
            other => {
                return Err(ApiError::invalid_parameter(
                    "state",
                    format!("invalid state: \"{other}\""),
                ))
            }
        };
        let public = match params.get("public") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            // The real server crashes here; a test server had better answer.
            Some(other) => {
                return Err(ApiError::invalid_parameter(
                    "public",
                    format!("invalid public: \"{other}\""),
                ))
            }
        };
        let limit = match params.get("limit") {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(0) => None,
                Ok(limit) => Some(limit),
                Err(_) => {
                    return Err(ApiError::invalid_parameter(
                        "limit",
                        format!("invalid limit: \"{text}\""),
                    ))
                }
            },
        };
        let marker = match params.get("marker") {
            None => None,
            Some(text) => Some(if let Ok(uuid) = ImageUuid::parse(text) {
                Marker::Image(uuid)
            } else if let Ok(time) = DateTime::parse_from_rfc3339(text) {
                Marker::Time(time.with_timezone(&Utc))
            } else {
                return Err(ApiError::invalid_parameter(
                    "marker",
                    format!("invalid marker: \"{text}\""),
                ));
            }),
        };
        let newest_first = match params.get("sort") {
            None | Some("published_at") | Some("published_at.asc") => false,
            Some("published_at.desc") => true,
            Some(other) => {
                return Err(ApiError::invalid_parameter(
                    "sort",
                    format!("invalid sort: \"{other}\""),
                ))
            }
        };
        let tags = params
            .pairs()
            .filter_map(|(key, value)| {
                Some((key.strip_prefix("tag.")?.to_string(), value.to_string()))
            })
            .collect();
        Ok(ListQuery {
            shows_active_images,
            name: params.get("name").map(TextMatch::parse),
            version: params.get("version").map(TextMatch::parse),
            owner: params.get("owner").map(String::from),
            os: params.get("os").map(String::from),
            image_type: params
                .get("type")
                .map(|value| match value.strip_prefix('!') {
                    Some(excluded) => TypeMatch::IsNot(excluded.into()),
                    None => TypeMatch::Is(value.into()),
                }),
            public,
            tags,
            marker,
            limit,
            newest_first,
        })
    }

    /// The page to return. `page_cap` is the server's default and maximum
    /// page size (sdc-imgapi on Moray: 1000), if it has one.
    pub fn select<'a>(
        &self,
        store: &'a Store,
        scope: &ChannelScope,
        page_cap: Option<usize>,
    ) -> Result<Vec<&'a StoredImage>, ApiError> {
        let marker_time = match &self.marker {
            None => None,
            Some(Marker::Time(time)) => Some(*time),
            Some(Marker::Image(uuid)) => Some(
                store
                    .get(uuid)
                    .map(StoredImage::published_at)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "InvalidParameter",
                            format!("invalid marker: image \"{uuid}\" not found"),
                        )
                    })?,
            ),
        };
        if !self.shows_active_images {
            return Ok(Vec::new());
        }
        let mut images: Vec<&StoredImage> = store
            .images()
            .filter(|image| image.state() == "active" && scope.admits(image) && self.matches(image))
            .collect();
        images.sort_by_key(|image| image.sort_key());
        if self.newest_first {
            images.reverse();
        }
        if let Some(marker_time) = marker_time {
            // Inclusive: the marker image itself comes back first (c11).
            images.retain(|image| match self.newest_first {
                false => image.published_at() >= marker_time,
                true => image.published_at() <= marker_time,
            });
        }
        let limit = match (self.limit, page_cap) {
            (Some(limit), Some(cap)) => Some(limit.min(cap)),
            (limit, cap) => limit.or(cap),
        };
        if let Some(limit) = limit {
            images.truncate(limit);
        }
        Ok(images)
    }

    fn matches(&self, image: &StoredImage) -> bool {
        let field = |name: &str| image.manifest.get(name).and_then(Value::as_str);
        let text_ok = |filter: &Option<TextMatch>, name: &str| {
            filter.as_ref().is_none_or(|f| f.matches(field(name)))
        };
        let exact_ok = |wanted: &Option<String>, name: &str| {
            wanted.as_deref().is_none_or(|w| field(name) == Some(w))
        };
        let type_ok = match &self.image_type {
            None => true,
            Some(TypeMatch::Is(wanted)) => field("type") == Some(wanted.as_str()),
            Some(TypeMatch::IsNot(excluded)) => field("type") != Some(excluded.as_str()),
        };
        let public_ok = self.public.is_none_or(|wanted| {
            image.manifest.get("public").and_then(Value::as_bool) == Some(wanted)
        });
        let tags_ok = self.tags.iter().all(|(key, wanted)| {
            match image.manifest.get("tags").and_then(|tags| tags.get(key)) {
                Some(Value::String(value)) => value == wanted,
                Some(Value::Bool(value)) => wanted == if *value { "true" } else { "false" },
                Some(Value::Number(value)) => wanted.parse::<f64>().ok() == value.as_f64(),
                _ => false,
            }
        });
        text_ok(&self.name, "name")
            && text_ok(&self.version, "version")
            && exact_ok(&self.owner, "owner")
            && exact_ok(&self.os, "os")
            && type_ok
            && public_ok
            && tags_ok
    }
}
