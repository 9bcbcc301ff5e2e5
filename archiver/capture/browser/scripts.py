"""JavaScript the browser evaluates in the captured page. Read-only: nothing here clicks,
types, removes or hides anything (the capture shows what a person was shown)."""

from __future__ import annotations

SCROLL_STEP = """
() => {
  const before = window.scrollY;
  window.scrollBy(0, Math.max(1, window.innerHeight));
  const root = document.scrollingElement || document.documentElement;
  return {moved: window.scrollY !== before, height: root ? root.scrollHeight : 0};
}
"""

SCROLL_TOP = "() => { window.scrollTo(0, 0); }"

AT_BOTTOM = """
() => {
  const root = document.scrollingElement || document.documentElement;
  return !root || window.scrollY + window.innerHeight >= root.scrollHeight - 2;
}
"""

PAGE_HEIGHT = """
() => {
  const root = document.scrollingElement || document.documentElement;
  return root ? root.scrollHeight : 0;
}
"""

PAGE_INFO = """
() => ({
  title: document.title || '',
  text: document.body ? document.body.innerText : '',
  language: navigator.language || '',
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || '',
  user_agent: navigator.userAgent,
})
"""

# <video>/<audio> sources in the rendered DOM (absolute URLs; blob: and data: are dropped
# by the caller: they name no resource a media downloader could fetch).
DOM_MEDIA = """
() => Array.from(document.querySelectorAll(
    'video[src], audio[src], video > source[src], audio > source[src]'))
  .map((element) => element.src)
"""

# Walls: heuristics only, and only *reported*. Each entry is [name, what matched], so the
# report says why we think so. A consent element must be visible AND mention cookies or
# consent; buttons alone count only when the page text talks about cookies too. A login
# wall is a login URL, a visible password field, or text asking to log in to go on.
WALLS = r"""
() => {
  const visible = (el) => {
    const style = window.getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden'
        || Number(style.opacity) === 0) return false;
    const box = el.getBoundingClientRect();
    return box.width > 1 && box.height > 1;
  };
  const text = (el) => (el.innerText || el.value || '').toLowerCase();
  const cookieWords = /\b(cookies?|consent|gdpr)\b/;
  const walls = [];
  const consent = Array.from(document.querySelectorAll(
      '[id*="cookie" i], [class*="cookie" i], [id*="consent" i], [class*="consent" i], '
      + '[aria-label*="cookie" i], [aria-label*="consent" i], [id*="gdpr" i], '
      + '[class*="gdpr" i]'))
    .find((el) => visible(el) && cookieWords.test(text(el)));
  const body = document.body ? text(document.body) : '';
  const button = Array.from(document.querySelectorAll(
      'button, [role="button"], a, input[type="button"], input[type="submit"]'))
    .filter(visible).map((el) => text(el).trim())
    .find((label) => /^(accept|allow|agree|i agree|reject|decline)( all)?( cookies)?$/
      .test(label) || /\b(accept|allow|reject) (all )?cookies\b/.test(label));
  if (consent) {
    const name = consent.id ? '#' + consent.id : consent.tagName.toLowerCase();
    walls.push(['cookie-consent', 'visible consent element ' + name]);
  } else if (button !== undefined && cookieWords.test(body)) {
    walls.push(['cookie-consent', 'visible button "' + button + '" on a page about cookies']);
  }
  const loginPath = new RegExp('(^|/)(login|log-in|signin|sign-in|sign_in|checkpoint)(/|$)'
    + '|/flow/login', 'i');
  const password = Array.from(document.querySelectorAll('input[type="password"]'))
    .some(visible);
  const askText = body.match(new RegExp(
    '\\b(log ?in|sign ?in|sign up|create an account) to (continue|see|view|read|watch)\\b'
    + '|\\byou (must|need to) (log|sign) ?in\\b'));
  if (loginPath.test(location.pathname)) {
    walls.push(['login', 'login address ' + location.pathname]);
  } else if (password) {
    walls.push(['login', 'visible password field']);
  } else if (askText) {
    walls.push(['login', 'text "' + askText[0] + '"']);
  }
  return walls;
}
"""
