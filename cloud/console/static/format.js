// Times in the browser's time zone and ages ("45 s", "3 min", "2 h") in the chosen
// language. Ages are measured on the server's clock (see setServerTime), so a PC whose
// clock is off does not show a fresh alarm as minutes old.

import { language, t } from "./i18n.js";

let clockOffsetMs = 0;

/** Remember how far the server's clock is ahead of ours (from the stream's hello). */
export function setServerTime(iso) {
  const server = Date.parse(iso);
  if (!Number.isNaN(server)) clockOffsetMs = server - Date.now();
}

/** Now, by the server's clock, in milliseconds. */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

/** How long ago `iso` was, e.g. "45 s", "3 min", "2 h", "3 d". */
export function age(iso) {
  const s = Math.max(0, Math.floor((serverNow() - Date.parse(iso)) / 1000));
  if (s < 60) return t("age.s", { n: s });
  if (s < 3600) return t("age.min", { n: Math.floor(s / 60) });
  if (s < 48 * 3600) return t("age.h", { n: Math.floor(s / 3600) });
  return t("age.d", { n: Math.floor(s / 86400) });
}

function locale() {
  return language() === "zh" ? "zh-CN" : "en-GB";
}

/** `iso` as local wall time: "14:03:07" today, "03-14 14:03" another day. */
export function time(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  if (when.toDateString() === new Date().toDateString()) {
    return when.toLocaleTimeString(locale(), { hour12: false });
  }
  return when.toLocaleString(locale(), {
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false,
  });
}

/** "community · building unit", leaving out the parts an incident does not have. */
export function place(incident) {
  const home = [incident.building, incident.unit].filter(Boolean).join(" ");
  return home ? `${incident.community} · ${home}` : incident.community;
}
