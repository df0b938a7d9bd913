//! `%t`: a second of the wall clock in the server's local time zone, as Apache writes it
//! (`[25/Nov/2026:03:32:44 +0100]`).
//!
//! The time zone is the C library's (`TZ`, else `/etc/localtime`), as for Apache and gunicorn; its
//! `localtime_r` is the only way to it that needs no new dependency, and the only unsafe code here.
#![allow(unsafe_code)]

use std::fmt::Write as _;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A broken-down local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    /// 0-11.
    month: usize,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// East of UTC.
    offset_seconds: i64,
}

/// `[dd/Mon/yyyy:hh:mm:ss ±hhmm]` for `secs` since the epoch, in local time.
pub(crate) fn apache_time(secs: i64) -> String {
    text(local(secs).unwrap_or_else(|| utc(secs)))
}

fn text(t: Civil) -> String {
    let mut out = String::with_capacity(28);
    let sign = if t.offset_seconds < 0 { '-' } else { '+' };
    let offset_minutes = t.offset_seconds.abs() / 60;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}]",
        t.day,
        MONTHS[t.month % 12],
        t.year,
        t.hour,
        t.minute,
        t.second,
        offset_minutes / 60,
        offset_minutes % 60,
    );
    out
}

fn local(secs: i64) -> Option<Civil> {
    // `time_t` is 64 bits here, 32 on some platforms.
    #[allow(clippy::useless_conversion)]
    let time: libc::time_t = secs.try_into().ok()?;
    // SAFETY: `tm` is plain data, valid when zeroed; localtime_r writes only into it and, unlike
    // localtime, keeps no shared result, so concurrent calls are sound. A null result means it failed.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(Civil {
        year: i64::from(tm.tm_year) + 1900,
        month: usize::try_from(tm.tm_mon).ok()?,
        day: u32::try_from(tm.tm_mday).ok()?,
        hour: u32::try_from(tm.tm_hour).ok()?,
        minute: u32::try_from(tm.tm_min).ok()?,
        second: u32::try_from(tm.tm_sec).ok()?,
        offset_seconds: tm.tm_gmtoff,
    })
}

/// UTC by arithmetic, should the C library refuse a time (days-to-civil, after Howard Hinnant).
fn utc(secs: i64) -> Civil {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 2 } else { mp - 10 };
    let year = yoe + era * 400 + i64::from(month <= 1);
    // Every value below is bounded by the arithmetic above (day 1-31, month 0-11, rem < 86400).
    Civil {
        year,
        month: month as usize,
        day: day as u32,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        offset_seconds: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apache_s_layout_with_the_offset_east_or_west() {
        let t = Civil {
            year: 2026,
            month: 10,
            day: 5,
            hour: 3,
            minute: 2,
            second: 4,
            offset_seconds: 3600 + 30 * 60,
        };
        assert_eq!(text(t), "[05/Nov/2026:03:02:04 +0130]");
        let west = Civil {
            offset_seconds: -7 * 3600,
            ..t
        };
        assert_eq!(text(west), "[05/Nov/2026:03:02:04 -0700]");
    }

    #[test]
    fn utc_arithmetic_agrees_with_known_instants() {
        assert_eq!(text(utc(0)), "[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(text(utc(1_764_041_564)), "[25/Nov/2025:03:32:44 +0000]");
        assert_eq!(text(utc(951_782_400)), "[29/Feb/2000:00:00:00 +0000]");
    }

    #[test]
    fn local_time_is_the_same_instant_as_utc() {
        let secs = 1_764_041_564;
        let local = local(secs).expect("the C library knows this time");
        let back = utc(secs + local.offset_seconds);
        assert_eq!(
            Civil {
                offset_seconds: local.offset_seconds,
                ..back
            },
            local
        );
    }
}
