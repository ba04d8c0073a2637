//! The volume table: which block volumes exist, their ids and sizes. This is
//! the replicated, deterministic half of block volumes; the bytes live in
//! sparse files (`block_store.rs`) that the apply loop changes by replaying
//! the `VolumeEvent`s this table emits, in order.
//!
//! A volume's id is the log index of the entry that created it, so it is the
//! same on every replica and never reused: a volume deleted and created again
//! under the same name gets a new file, and a late write for the old one
//! cannot land in the new one.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::StateError;
use crate::event::{Event, VolumeEvent};
use crate::limits::{VOLUMES_MAX, VOLUME_BYTES_MAX, VOLUME_NAME_BYTES_MAX};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub id: u64,
    pub size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Volumes {
    by_name: BTreeMap<String, VolumeInfo>,
}

impl Volumes {
    pub fn get(&self, name: &str) -> Option<&VolumeInfo> {
        self.by_name.get(name)
    }

    /// Every volume, in name order.
    pub fn list(&self) -> Vec<VolumeInfo> {
        self.by_name.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub(crate) fn from_list(list: Vec<VolumeInfo>) -> Volumes {
        Volumes {
            by_name: list.into_iter().map(|v| (v.name.clone(), v)).collect(),
        }
    }

    pub(crate) fn create(
        &mut self,
        index: u64,
        name: &str,
        size: u64,
        events: &mut Vec<Event>,
    ) -> Result<VolumeInfo, StateError> {
        check_name(name)?;
        check_size(size)?;
        if self.by_name.contains_key(name) {
            return Err(StateError::VolumeExists(name.to_string()));
        }
        if self.by_name.len() >= VOLUMES_MAX {
            return Err(StateError::TooManyVolumes { max: VOLUMES_MAX });
        }
        let info = VolumeInfo {
            name: name.to_string(),
            id: index,
            size,
        };
        self.by_name.insert(name.to_string(), info.clone());
        events.push(Event::Volume(VolumeEvent::Created { id: index, size }));
        Ok(info)
    }

    pub(crate) fn resize(
        &mut self,
        name: &str,
        size: u64,
        events: &mut Vec<Event>,
    ) -> Result<VolumeInfo, StateError> {
        check_size(size)?;
        let v = self
            .by_name
            .get_mut(name)
            .ok_or_else(|| StateError::NoSuchVolume(name.to_string()))?;
        if v.size != size {
            events.push(Event::Volume(VolumeEvent::Resized {
                id: v.id,
                old: v.size,
                new: size,
            }));
            v.size = size;
        }
        Ok(v.clone())
    }

    pub(crate) fn delete(
        &mut self,
        name: &str,
        events: &mut Vec<Event>,
    ) -> Result<VolumeInfo, StateError> {
        let v = self
            .by_name
            .remove(name)
            .ok_or_else(|| StateError::NoSuchVolume(name.to_string()))?;
        events.push(Event::Volume(VolumeEvent::Deleted { id: v.id }));
        Ok(v)
    }

    pub(crate) fn write(
        &self,
        name: &str,
        offset: u64,
        data: &Bytes,
        events: &mut Vec<Event>,
    ) -> Result<(), StateError> {
        let v = self.range(name, offset, data.len() as u64)?;
        if !data.is_empty() {
            events.push(Event::Volume(VolumeEvent::Written {
                id: v.id,
                offset,
                data: data.clone(),
            }));
        }
        Ok(())
    }

    pub(crate) fn zero(
        &self,
        name: &str,
        offset: u64,
        len: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), StateError> {
        let v = self.range(name, offset, len)?;
        if len > 0 {
            events.push(Event::Volume(VolumeEvent::Zeroed {
                id: v.id,
                offset,
                len,
            }));
        }
        Ok(())
    }

    /// The volume, if `[offset, offset + len)` lies inside it.
    pub fn range(&self, name: &str, offset: u64, len: u64) -> Result<&VolumeInfo, StateError> {
        let v = self
            .by_name
            .get(name)
            .ok_or_else(|| StateError::NoSuchVolume(name.to_string()))?;
        match offset.checked_add(len) {
            Some(end) if end <= v.size => Ok(v),
            _ => Err(StateError::VolumeRange {
                offset,
                len,
                size: v.size,
            }),
        }
    }
}

fn check_name(name: &str) -> Result<(), StateError> {
    if name.is_empty() || name.len() > VOLUME_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(StateError::VolumeName(name.to_string()));
    }
    Ok(())
}

fn check_size(size: u64) -> Result<(), StateError> {
    if size > VOLUME_BYTES_MAX {
        return Err(StateError::VolumeSize {
            size,
            max: VOLUME_BYTES_MAX,
        });
    }
    Ok(())
}
