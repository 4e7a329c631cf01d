//! Picture size from parameter sets: H.264 SPS (ITU-T H.264 §7.3.2.1.1), H.265 SPS
//! (ITU-T H.265 §7.3.2.2) and the AV1 sequence header OBU (AV1 §5.5).
//!
//! Only the syntax up to the picture size and cropping is read; everything after it (VUI, ...)
//! is ignored. Sizes are the displayed (cropped) size, as players report it.

use super::bits::{strip_emulation_prevention, BitReader, ByteReader};
use super::CodecError;

/// Displayed picture size in luma samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PictureSize {
    pub width: u32,
    pub height: u32,
}

/// Applies a cropping window, refusing one larger than the picture.
fn crop(
    r: &BitReader<'_>,
    coded: (u64, u64),
    unit: (u64, u64),
    window: [u64; 4],
) -> Result<PictureSize, CodecError> {
    let [left, right, top, bottom] = window;
    let w = (left + right).checked_mul(unit.0).and_then(|c| coded.0.checked_sub(c));
    let h = (top + bottom).checked_mul(unit.1).and_then(|c| coded.1.checked_sub(c));
    match (w, h) {
        (Some(w), Some(h)) if w <= u64::from(u32::MAX) && h <= u64::from(u32::MAX) => {
            Ok(PictureSize { width: w as u32, height: h as u32 })
        }
        _ => Err(r.invalid(
            "cropping window",
            format!("crop {window:?} exceeds coded size {}x{}", coded.0, coded.1),
        )),
    }
}

/// H.264 SPS NAL unit (with its 1-byte NAL header) -> displayed size.
pub(super) fn h264_sps_size(nal: &[u8]) -> Result<PictureSize, CodecError> {
    const RECORD: &str = "H.264 SPS";
    let rbsp = strip_emulation_prevention(nal);
    let mut r = BitReader::new(&rbsp, RECORD);
    let nal_type = r.bits(8)? & 0x1f;
    if nal_type != 7 {
        return Err(r.invalid("nal_unit_type", format!("{nal_type}, expected 7 (SPS)")));
    }
    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint flags, level_idc
    r.ue("seq_parameter_set_id")?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    // High profiles carry chroma format, bit depth and scaling lists (§7.3.2.1.1).
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue("chroma_format_idc")?;
        if chroma_format_idc > 3 {
            return Err(r.invalid("chroma_format_idc", format!("{chroma_format_idc} > 3")));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue("bit_depth_luma_minus8")?;
        r.ue("bit_depth_chroma_minus8")?;
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue("log2_max_frame_num_minus4")?;
    match r.ue("pic_order_cnt_type")? {
        0 => {
            r.ue("log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.skip(1)?; // delta_pic_order_always_zero_flag
            r.se("offset_for_non_ref_pic")?;
            r.se("offset_for_top_to_bottom_field")?;
            let n = r.ue("num_ref_frames_in_pic_order_cnt_cycle")?;
            if n > 255 {
                return Err(r.invalid("num_ref_frames_in_pic_order_cnt_cycle", format!("{n} > 255")));
            }
            for _ in 0..n {
                r.se("offset_for_ref_frame")?;
            }
        }
        2 => {}
        t => return Err(r.invalid("pic_order_cnt_type", format!("{t} > 2"))),
    }
    r.ue("max_num_ref_frames")?;
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue("pic_width_in_mbs_minus1")?) + 1;
    let height_map_units = u64::from(r.ue("pic_height_in_map_units_minus1")?) + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let mut window = [0u64; 4];
    if r.bit()? {
        for w in &mut window {
            *w = u64::from(r.ue("frame_crop_offset")?);
        }
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    // CropUnitX/Y, equations 7-19 to 7-22.
    let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
    let unit = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    crop(&r, (width_mbs * 16, field_factor * height_map_units * 16), unit, window)
}

/// `scaling_list()` (§7.3.2.1.1.1): read only to get past it.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), CodecError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se("delta_scale")?;
            next = (last + delta).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// H.265 SPS NAL unit (with its 2-byte NAL header) -> displayed size.
pub(super) fn h265_sps_size(nal: &[u8]) -> Result<PictureSize, CodecError> {
    const RECORD: &str = "H.265 SPS";
    let rbsp = strip_emulation_prevention(nal);
    let mut r = BitReader::new(&rbsp, RECORD);
    let header = r.bits(16)?;
    let nal_type = (header >> 9) & 0x3f;
    if nal_type != 33 {
        return Err(r.invalid("nal_unit_type", format!("{nal_type}, expected 33 (SPS)")));
    }
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    r.skip(1)?; // sps_temporal_id_nesting_flag
                // profile_tier_level(1, sps_max_sub_layers_minus1), §7.3.3.
    r.skip(96)?; // general profile (88 bits) + general_level_idc
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1) {
        *p = (r.bit()?, r.bit()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue("sps_seq_parameter_set_id")?;
    let chroma_format_idc = r.ue("chroma_format_idc")?;
    if chroma_format_idc > 3 {
        return Err(r.invalid("chroma_format_idc", format!("{chroma_format_idc} > 3")));
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.bit()?;
    let width = u64::from(r.ue("pic_width_in_luma_samples")?);
    let height = u64::from(r.ue("pic_height_in_luma_samples")?);
    let mut window = [0u64; 4];
    if r.bit()? {
        for w in &mut window {
            *w = u64::from(r.ue("conf_win_offset")?);
        }
    }
    // SubWidthC / SubHeightC, Table 6-1.
    let unit = match (separate_colour_plane, chroma_format_idc) {
        (false, 1) => (2, 2),
        (false, 2) => (2, 1),
        _ => (1, 1),
    };
    crop(&r, (width, height), unit, window)
}

/// AV1 `configOBUs` (low-overhead OBUs) -> the size from the first sequence header OBU, if any.
pub(super) fn av1_config_obus_size(obus: &[u8]) -> Result<Option<PictureSize>, CodecError> {
    const RECORD: &str = "av1C configOBUs";
    let mut r = ByteReader::new(obus, RECORD);
    while r.remaining() > 0 {
        let start = r.pos();
        let header = r.u8()?;
        let obu_type = (header >> 3) & 0x0f;
        if header & 0x04 != 0 {
            r.u8()?; // obu_extension_header
        }
        let size = if header & 0x02 != 0 { leb128(&mut r)? } else { r.remaining() as u64 };
        let size = usize::try_from(size).map_err(|_| CodecError::Invalid {
            record: RECORD,
            offset: start,
            field: "obu_size",
            reason: format!("{size} does not fit in memory"),
        })?;
        let payload = r.take(size)?;
        if obu_type == 1 {
            return av1_sequence_header_size(payload).map(Some);
        }
    }
    Ok(None)
}

/// `leb128()` (AV1 §4.10.5): at most 8 bytes.
fn leb128(r: &mut ByteReader<'_>) -> Result<u64, CodecError> {
    let mut value = 0u64;
    for i in 0..8 {
        let b = r.u8()?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    Ok(value)
}

/// `sequence_header_obu()` (AV1 §5.5.1) -> max frame size.
fn av1_sequence_header_size(obu: &[u8]) -> Result<PictureSize, CodecError> {
    let mut r = BitReader::new(obu, "AV1 sequence header OBU");
    r.skip(3)?; // seq_profile
    r.skip(1)?; // still_picture
    let reduced_still_picture_header = r.bit()?;
    if reduced_still_picture_header {
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if r.bit()? {
            // timing_info()
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.bit()? {
                r.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info_present = r.bit()?;
            if decoder_model_info_present {
                buffer_delay_length = r.bits(5)? + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay_present = r.bit()?;
        let operating_points = r.bits(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info_present && r.bit()? {
                r.skip(2 * buffer_delay_length as usize + 1)?;
            }
            if initial_display_delay_present && r.bit()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = u64::from(r.bits(width_bits)?) + 1;
    let height = u64::from(r.bits(height_bits)?) + 1;
    crop(&r, (width, height), (1, 1), [0; 4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x264_sps_320x240() {
        // From ffmpeg-5.1_flv_h264_seqhdr.bin (x264, High profile, 320x240).
        let sps = hex::decode("6764000dacd94141fb011000000300100000030320f1429960").unwrap();
        assert_eq!(h264_sps_size(&sps).unwrap(), size(320, 240));
    }

    fn size(width: u32, height: u32) -> PictureSize {
        PictureSize { width, height }
    }

    /// SPS from libx264 (ffmpeg 5.1, `-f h264`): cropping, interlace, 4:2:2 and 4:4:4 paths.
    #[test]
    fn libx264_sps_variants() {
        let cases = [
            // -profile:v baseline -s 1920x1080: 68 MB rows, 8 lines cropped.
            ("6742c028d900780227e5c044000003000400000300c83c60c920", size(1920, 1080)),
            // -pix_fmt yuv422p -s 1918x1080 -flags +ildct+ilme: field coding, 4:2:2 crop units.
            ("677a0028bcd94078044f52ffe0780077e2000003000200000300643e2c5b2c", size(1918, 1080)),
            // -pix_fmt yuv444p -s 642x362: High 4:4:4, crop unit 1.
            ("67f4001e919b281485fc7cfff85a805a48800000030080000019078b16cb", size(642, 362)),
        ];
        for (hex_sps, want) in cases {
            let sps = hex::decode(hex_sps).unwrap();
            assert_eq!(h264_sps_size(&sps).unwrap(), want, "{hex_sps}");
        }
    }

    /// libx265 3.5 (ffmpeg 5.1), `-pix_fmt yuv422p10le -s 1918x1080`: conformance window.
    #[test]
    fn libx265_sps_422_cropped() {
        let sps = hex::decode(
            "4201010408000003009d08000003000078b003c08010e75b65959a4932bc05a02000000300200000030321",
        )
        .unwrap();
        assert_eq!(h265_sps_size(&sps).unwrap(), size(1918, 1080));
    }

    #[test]
    fn wrong_nal_type_is_refused() {
        assert!(matches!(
            h264_sps_size(&[0x68, 0xce, 0x3c, 0x80]),
            Err(CodecError::Invalid { field: "nal_unit_type", .. })
        ));
    }
}
