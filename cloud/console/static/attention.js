// What makes a dispatcher look up: a short two-tone beep (WebAudio, no audio file), a
// flash of the page, and the count of unclaimed incidents in the tab's title.

import { t } from "./i18n.js";

const FLASH_MS = 3000;
let audio = null;
let flashTimer = 0;

/**
 * Create (or wake) the audio context. Browsers only let sound play after a user
 * gesture, so this is called from the sign-in click and from every key press.
 */
export function primeSound() {
  audio ??= new AudioContext();
  if (audio.state === "suspended") audio.resume().catch(() => {});
}

/** A new P1 incident: beep and flash. */
export function alarm() {
  beep();
  document.body.classList.add("flash");
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => document.body.classList.remove("flash"), FLASH_MS);
}

function beep() {
  primeSound();
  const start = audio.currentTime;
  for (const [offset, pitch] of [[0, 880], [0.25, 660], [0.5, 880]]) {
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = pitch;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.3, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.2);
    tone.connect(gain).connect(audio.destination);
    tone.start(start + offset);
    tone.stop(start + offset + 0.22);
  }
}

/** "(3) Anju" with 3 unclaimed incidents, "Anju" with none (安居调度台 in Chinese). */
export function setTitle(unclaimed) {
  document.title = unclaimed ? `(${unclaimed}) ${t("title")}` : t("title");
}
