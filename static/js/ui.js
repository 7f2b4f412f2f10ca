// The page's elements (static/index.html), looked up once. Module scripts run after the
// document is parsed, so every element exists when this module is evaluated.

const $ = (id) => document.getElementById(id);

export const ui = {
  list: $("series-list"), empty: $("empty"), banner: $("banner"), dot: $("dot"),
  name: $("station-name"), select: $("station-select"), lastFile: $("last-file"),
  nConform: $("n-conform"), nNonconform: $("n-nonconform"), nNoTemplate: $("n-no-template"),
  unreadableBox: $("unreadable-box"), unreadable: $("unreadable-list"),
  nUnreadable: $("n-unreadable"), unreadableLatest: $("unreadable-latest"),
  template: $("series-template"), tableTemplate: $("table-template"),
  checklist: $("checklist"), checklistMeta: $("checklist-meta"), checklistNote: $("checklist-note"),
  items: $("checklist-items"), itemTemplate: $("item-template"),
  alerts: $("alerts"), alertList: $("alert-list"), alertTemplate: $("alert-template"),
  pinStart: $("pin-start"), pinConfirm: $("pin-confirm"), pinQuestion: $("pin-question"),
  pinYes: $("pin-yes"), pinNo: $("pin-no"), unpin: $("unpin"), pinStatus: $("pin-status"),
  authMode: $("auth-mode"), userName: $("user-name"), logout: $("logout"),
  alarm: $("alarm"), alarmList: $("alarm-list"), checklistSummary: $("checklist-summary"),
  sessionTemplate: $("session-template"), soundSwitch: $("sound-switch"), sound: $("alarm-sound"),
  notifyButton: $("notify-enable"), wallState: $("wall-state"), wallWord: $("wall-word"),
  wallWhere: $("wall-where"),
};

/** Make ``els`` the children of ``parent``, in order, moving only what is out of place: a
 * new series costs one insertion, and a half-typed reason keeps its focus. */
export function placeChildren(parent, els) {
  els.forEach((el, i) => {
    if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] ?? null);
  });
  while (parent.children.length > els.length) parent.lastElementChild.remove();
}
