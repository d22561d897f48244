//! The master elements Matroska keeps, each walked with the list of children its
//! specification defines (RFC 9559, RFC 8794 for the EBML header). exiftool reads every
//! master with one flat table, so a `Title`, `DateUTC` or `SimpleTag` placed inside the
//! EBML header, a `Seek`, a `CuePoint` or a track's `Video` is read as the file's own;
//! ffmpeg skips what its syntax tables do not define. So anything a list does not name
//! becomes a Void where it lies (and a Void's old contents are zeroed), the same rule as
//! ISOBMFF: every kept master walked with its list.

use super::{Action, Element, MediaError, Store, master_children, name, push_crc, void_contents};

/// A master element and the children it may keep: each a leaf, or a master in turn.
pub(super) struct Master {
    pub(super) name: &'static str,
    pub(super) kids: &'static [(u32, Option<&'static Master>)],
}

/// The EBML header: versions, the DocType and its versions (not `DocTypeExtension`).
pub(super) const EBML_HEADER: Master = Master {
    name: "EBML header",
    kids: &[
        (0x4286, None),
        (0x42F7, None),
        (0x42F2, None),
        (0x42F3, None),
        (0x4282, None),
        (0x4287, None),
        (0x4285, None),
    ],
};

const SEEK: Master = Master { name: "Seek", kids: &[(0x53AB, None), (0x53AC, None)] };
pub(super) const SEEK_HEAD: Master = Master { name: "SeekHead", kids: &[(0x4DBB, Some(&SEEK))] };

const CUE_REFERENCE: Master =
    Master { name: "CueReference", kids: &[(0x96, None), (0x97, None), (0x535F, None), (0xEB, None)] };
const CUE_TRACK_POSITIONS: Master = Master {
    name: "CueTrackPositions",
    kids: &[
        (0xF7, None),
        (0xF1, None),
        (0xF0, None),
        (0xB2, None),
        (0x5378, None),
        (0xEA, None),
        (0xDB, Some(&CUE_REFERENCE)),
    ],
};
const CUE_POINT: Master = Master { name: "CuePoint", kids: &[(0xB3, None), (0xB7, Some(&CUE_TRACK_POSITIONS))] };
pub(super) const CUES: Master = Master { name: "Cues", kids: &[(0xBB, Some(&CUE_POINT))] };

const MASTERING: Master = Master {
    name: "MasteringMetadata",
    kids: &[
        (0x55D1, None),
        (0x55D2, None),
        (0x55D3, None),
        (0x55D4, None),
        (0x55D5, None),
        (0x55D6, None),
        (0x55D7, None),
        (0x55D8, None),
        (0x55D9, None),
        (0x55DA, None),
    ],
};
const COLOUR: Master = Master {
    name: "Colour",
    kids: &[
        (0x55B1, None),
        (0x55B2, None),
        (0x55B3, None),
        (0x55B4, None),
        (0x55B5, None),
        (0x55B6, None),
        (0x55B7, None),
        (0x55B8, None),
        (0x55B9, None),
        (0x55BA, None),
        (0x55BB, None),
        (0x55BC, None),
        (0x55BD, None),
        (0x55D0, Some(&MASTERING)),
    ],
};
const PROJECTION: Master = Master {
    name: "Projection",
    kids: &[(0x7671, None), (0x7672, None), (0x7673, None), (0x7674, None), (0x7675, None)],
};
/// A track's `Video`: sizes, crops, display, interlacing, stereo, alpha, colour, projection.
pub(super) const VIDEO: Master = Master {
    name: "Video",
    kids: &[
        (0x9A, None),
        (0x9D, None),
        (0x53B8, None),
        (0x53C0, None),
        (0x53B9, None),
        (0xB0, None),
        (0xBA, None),
        (0x54AA, None),
        (0x54BB, None),
        (0x54CC, None),
        (0x54DD, None),
        (0x54B0, None),
        (0x54BA, None),
        (0x54B2, None),
        (0x54B3, None),
        (0x2E_B524, None),
        (0x2F_B523, None),
        (0x23_83E3, None),
        (0x55B0, Some(&COLOUR)),
        (0x7670, Some(&PROJECTION)),
    ],
};
/// A track's `Audio`: sampling frequencies, channels, bit depth, emphasis.
pub(super) const AUDIO: Master = Master {
    name: "Audio",
    kids: &[(0xB5, None), (0x78B5, None), (0x9F, None), (0x7D7B, None), (0x6264, None), (0x52F1, None)],
};

const COMPRESSION: Master = Master { name: "ContentCompression", kids: &[(0x4254, None), (0x4255, None)] };
const AES: Master = Master { name: "ContentEncAESSettings", kids: &[(0x47E8, None)] };
const ENCRYPTION: Master = Master {
    name: "ContentEncryption",
    kids: &[
        (0x47E1, None),
        (0x47E2, None),
        (0x47E7, Some(&AES)),
        (0x47E3, None),
        (0x47E4, None),
        (0x47E5, None),
        (0x47E6, None),
    ],
};
const CONTENT_ENCODING: Master = Master {
    name: "ContentEncoding",
    kids: &[(0x5031, None), (0x5032, None), (0x5033, None), (0x5034, Some(&COMPRESSION)), (0x5035, Some(&ENCRYPTION))],
};
pub(super) const CONTENT_ENCODINGS: Master =
    Master { name: "ContentEncodings", kids: &[(0x6240, Some(&CONTENT_ENCODING))] };

const TRACK_PLANE: Master = Master { name: "TrackPlane", kids: &[(0xE5, None), (0xE6, None)] };
const COMBINE_PLANES: Master = Master { name: "TrackCombinePlanes", kids: &[(0xE4, Some(&TRACK_PLANE))] };
const JOIN_BLOCKS: Master = Master { name: "TrackJoinBlocks", kids: &[(0xED, None)] };
pub(super) const TRACK_OPERATION: Master =
    Master { name: "TrackOperation", kids: &[(0xE3, Some(&COMBINE_PLANES)), (0xE9, Some(&JOIN_BLOCKS))] };

/// `SilentTracks` in a Cluster: track numbers.
pub(super) const SILENT_TRACKS: Master = Master { name: "SilentTracks", kids: &[(0x58D7, None)] };

/// Walks a kept master with its list: a child not on it becomes a Void; a CRC-32 of
/// the master is recomputed when something inside it changed.
pub(super) fn walk(
    store: &mut impl Store,
    el: &Element,
    end: u64,
    master: &Master,
    plan: &mut Vec<Action>,
) -> Result<(), MediaError> {
    let (crc, kids) = master_children(store, el, end)?;
    let before = plan.len();
    for (at, child, next) in kids {
        match master.kids.iter().find(|k| k.0 == child.id) {
            Some((_, Some(sub))) => walk(store, &child, next, sub, plan)?,
            Some((_, None)) => {}
            None if child.id == super::VOID => {
                void_contents(store, &child, next, &format!("a Void in {}", master.name), plan)?
            }
            None => plan.push(Action::Void {
                at,
                len: next - at,
                what: format!("{} in {} (not defined there)", name(child.id), master.name),
            }),
        }
    }
    push_crc(plan, before, crc, end);
    Ok(())
}
