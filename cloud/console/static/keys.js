// Keyboard-first work: single keys act on the queue and the card, unless the dispatcher
// is typing (then only Enter and Escape mean something, inside the card's inputs).

const SHORTCUTS = {
  j: "next", ArrowDown: "next", k: "previous", ArrowUp: "previous", n: "nextUnclaimed",
  c: "claim", a: "acknowledge", d: "focusDispatch", r: "focusOutcome", "?": "toggleHelp",
  Escape: "closeHelp",
};

/** Call `handlers[name]()` for the shortcut pressed; `handlers` names are those above
 * plus dispatch, resolve and note (Enter in #dispatch-to, #outcome, Ctrl+Enter in
 * #note-text), and `any` on every key (to wake the sound). */
export function bindKeys(handlers) {
  document.addEventListener("keydown", (event) => {
    handlers.any();
    const target = event.target;
    if (typing(target)) {
      inInput(event, target, handlers);
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const name = SHORTCUTS[event.key];
    if (!name) return;
    event.preventDefault();
    handlers[name]();
  });
}

function inInput(event, target, handlers) {
  if (event.key === "Escape") {
    target.blur();
    return;
  }
  if (event.key !== "Enter" || event.isComposing) return;
  const submit = {
    "dispatch-to": "dispatch",
    outcome: "resolve",
    "note-text": event.ctrlKey || event.metaKey ? "note" : null,
  }[target.id];
  if (!submit) return;
  event.preventDefault();
  handlers[submit]();
}

function typing(target) {
  return target instanceof HTMLElement &&
    (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}
