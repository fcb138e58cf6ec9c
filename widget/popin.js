/*! popin widget | one global (popin), one WebSocket, nothing blocking */
(function (w, d) {
  'use strict';
  // Pages may call popin(...) before this loads, through the queue stub:
  // window.popin = window.popin || function () { (popin.q = popin.q || []).push(arguments) }
  var script = d.currentScript || d.querySelector('script[data-site]');
  if (!script || (w.popin && w.popin.loaded)) return;
  var queued = (w.popin && w.popin.q) || [];
  var origin = new URL(script.src, location.href);
  var socketUrl = origin.protocol.replace('http', 'ws') + '//' + origin.host + '/ws?site=' +
    encodeURIComponent(script.getAttribute('data-site') || '');
  var ws, asleep, attempts = 0, everOpened, outbox = [], lastUrl, lastActive = now();
  var config = { watch: [], scroll: [], idle: [], tab: 0 };
  var watches = {}, observer, visible = new Map(), host, current, scanTimer, sheet;
  var keepClear = script.getAttribute('data-keep-clear') || '';
  var page = { scroll: 0 }, idleSent = 0, typing = false, hiddenAt = 0, lastY = 0, lastYAt = 0;
  // A consent tool on the page (IAB TCF, Google Consent Mode): popin-consent.js reads it
  // and tells the server, which decides what may be kept; meanwhile nothing is.
  var cmp = !!(w.__tcfapi || w.dataLayer), signals = {};

  // Storage that never throws (private modes, blocked storage), and writes nothing but
  // the visitor's own choice until the server says the visitor's consent allows it.
  var remember;
  function stored(key, value, always) {
    try {
      if (value == null) return localStorage.getItem(key) || '';
      if (remember || always) localStorage.setItem(key, value);
    } catch (e) {}
    return '';
  }
  function forget() {
    'popin_v popin_s popin_seen'.split(' ').forEach(function (key) {
      try { localStorage.removeItem(key); } catch (e) {}
    });
  }
  function now() {
    return Date.now();
  }
  var choice = stored('popin_c'); // '1' opted in, '0' opted out, '' not asked
  function newId() {
    var bytes = crypto.getRandomValues(new Uint8Array(12)), id = '';
    for (var i = 0; i < bytes.length; i++) id += (bytes[i] + 256).toString(16).slice(1);
    return id;
  }
  var visitor = stored('popin_v') || newId(), lastSession = '';
  function sessionId() {
    var at = now(), saved = (stored('popin_s') || lastSession).split('.');
    // A session ends after 30 minutes without a page, as on the server.
    var id = saved[0] && at - saved[1] < 18e5 ? saved[0] : newId();
    stored('popin_s', lastSession = id + '.' + at);
    return id;
  }
  function keepIds() {
    stored('popin_v', visitor);
    stored('popin_s', lastSession);
  }
  function remembers(yes, drop) {
    remember = yes;
    if (yes) keepIds();
    else if (drop) forget();
  }

  // The owner's preview link: that rule's pop-in here, and nothing else sent (no visit).
  var preview = /popin-preview=([\w.-]+)/.exec(location.hash);
  // What happens in one moment leaves in one frame, a list, once the socket is open.
  function send(message) {
    if (preview && message.type !== 'preview') return;
    if (outbox.length < 50) outbox.push(message);
    if (!outbox[1]) queueMicrotask(flush);
    // Closed for idleness (4001): back as soon as the visitor does something.
    if (asleep && !ws) { asleep = 0; connect(); }
  }
  function flush() {
    // All in a frame if within the server's 4 KB, else one at a time.
    for (var text; ws && ws.readyState === 1 && outbox[0];) {
      text = JSON.stringify(outbox[1] ? outbox : outbox[0]);
      ws.send(text.length < 4e3 ? (outbox = [], text) : JSON.stringify(outbox.shift()));
    }
  }
  function connect() {
    var opened;
    ws = new WebSocket(socketUrl);
    ws.onopen = function () {
      opened = everOpened = 1;
      attempts = 0;
      // Then what the consent tools said, again for this connection, and what waited.
      outbox = [{
        type: 'hello', visitor: visitor, session: sessionId(), url: location.href,
        referrer: d.referrer, language: navigator.language || '',
        timezone: (Intl.DateTimeFormat().resolvedOptions().timeZone || ''),
        gpc: navigator.globalPrivacyControl === true, cmp: cmp,
        consent: choice === '1' ? 'granted' : choice === '0' ? 'denied' : 'unknown'
      }].concat(Object.values(signals), outbox);
      flush();
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.type === 'config') configure(message);
      else if (message.type === 'show') show(message);
      else if (message.type === 'consent') remembers(message.remember, 1);
      else if (message.type === 'identity') stored('popin_v', visitor = message.visitor);
      else if (message.type === 'update' && current && current.id === message.id) {
        var area = current.root.querySelector('[data-popin-area]');
        if (area) area.innerHTML = message.html;
      }
    };
    ws.onclose = function (event) {
      ws = null;
      // 4010: this visitor was erased; keep nothing of them on the device.
      if (event.code === 4010) forget();
      if (event.code === 4001) { asleep = 1; return; }
      // 1008 and 4xxx: the server refused us; a server never reached: stop after a while.
      if (event.code === 1008 || (event.code >= 4000 && event.code < 5000)) return;
      if (!opened && !everOpened && attempts > 8) return;
      var delay = Math.min(3e4, 500 * Math.pow(2, attempts++));
      setTimeout(connect, delay / 2 + Math.random() * delay / 2);
    };
  }

  function pageview() {
    var url = location.href.split('#')[0];
    if (url === lastUrl) return;
    lastUrl = url;
    send({ type: 'pageview', url: location.href, title: d.title });
    for (var name in watches) watches[name].seconds = watches[name].next = 0;
    page = { scroll: 0 };
    scanSoon();
  }

  // Keyword dwell: how long text holding a keyword (or any word of a group, optionally
  // within a CSS selector) stayed visible while the visitor was active. Only threshold
  // crossings leave the page, never its text.
  function configure(message) {
    config = message;
    remembers(message.remember);
    var next = {};
    message.watch.forEach(function (watch) {
      var old = watches[watch.name] || { seconds: 0 }, crossed = 0;
      while (crossed < watch.seconds.length && old.seconds >= watch.seconds[crossed]) crossed++;
      next[watch.name] = { spec: watch, seconds: old.seconds, next: crossed };
    });
    watches = next;
    scanSoon();
  }
  function scanSoon() {
    clearTimeout(scanTimer);
    scanTimer = setTimeout(scan, 300);
  }
  function scan() {
    if (observer) observer.disconnect();
    visible.clear();
    if (!d.body || !w.IntersectionObserver) return;
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        visible.get(entry.target).on = entry.isIntersecting && (entry.intersectionRatio >= .5 ||
          entry.intersectionRect.height >= innerHeight / 2);
      });
    }, { threshold: [0, .1, .25, .5, .75, 1] });
    var pinned = new Map();
    // Menus, sidebars, headers and banners stay on screen whatever the visitor reads:
    // text in fixed or sticky elements is not reading, unless a rule's selector names it.
    function isPinned(element) {
      if (!element || element === d.body) return 0;
      if (!pinned.has(element)) pinned.set(element, /^(fixed|sticky)$/.test(getComputedStyle(element).position) ||
        isPinned(element.parentElement));
      return pinned.get(element);
    }
    for (var name in watches) {
      var spec = watches[name].spec, roots = [d.body];
      // Whole words; "wax*" for every word starting with wax.
      var words = new RegExp('(^|[^\\p{L}\\p{N}])(' + spec.words.map(function (word) {
        var stem = word.slice(-1) === '*';
        word = word.replace(/\*$/, '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        return stem ? word : word + '(?![\\p{L}\\p{N}])';
      }).join('|') + ')', 'iu');
      try { if (spec.selector) roots = d.querySelectorAll(spec.selector); } catch (e) { roots = []; }
      [].forEach.call(roots, function (root) {
        var walker = d.createTreeWalker(root, 4), node;
        while ((node = walker.nextNode())) {
          var element = node.parentElement;
          if (!element || /^(SCRIPT|STYLE|NOSCRIPT|TEXTAREA|OPTION)$/.test(element.tagName)) continue;
          if (!words.test(node.nodeValue) || (!spec.selector && isPinned(element))) continue;
          var entry = visible.get(element);
          if (!entry) {
            visible.set(element, entry = { names: {} });
            observer.observe(element);
          }
          entry.names[name] = 1;
        }
      });
    }
  }
  function tick() {
    if (d.visibilityState !== 'visible') return;
    var idle = (now() - lastActive) / 1000;
    config.idle.forEach(function (seconds) {
      if (idle >= seconds && idleSent < seconds) send({ type: 'idle', seconds: seconds });
    });
    idleSent = Math.max(idleSent, idle | 0);
    // No input for 30 s: the visitor is not reading any more.
    if (idle > 30) return;
    var seen = {};
    visible.forEach(function (entry, element) {
      if (entry.on) for (var name in entry.names) seen[name] = seen[name] || element;
    });
    for (var name in seen) {
      var state = watches[name];
      if (!state) continue;
      state.seconds++;
      var thresholds = state.spec.seconds;
      while (state.next < thresholds.length && state.seconds >= thresholds[state.next]) {
        // Which element was read, so that an owner can see why a rule fired.
        send({ type: 'dwell', keyword: name, seconds: thresholds[state.next++], element: describe(seen[name]) });
      }
    }
  }
  function describe(element) {
    var parent = element.parentElement, name = function (el) {
      return el.tagName.toLowerCase() + (el.id ? '#' + el.id : el.classList[0] ? '.' + el.classList[0] : '');
    };
    return ((parent && parent !== d.body ? name(parent) + ' > ' : '') + name(element)).slice(0, 120);
  }
  function active() {
    lastActive = now();
    idleSent = 0;
  }
  function scrolled() {
    var root = d.documentElement, at = now(), y = w.scrollY;
    var percent = Math.min(100, Math.round((y + innerHeight) / root.scrollHeight * 100));
    config.scroll.forEach(function (threshold) {
      if (percent >= threshold && page.scroll < threshold) send({ type: 'scroll', percent: threshold });
    });
    page.scroll = Math.max(page.scroll, percent);
    // On touch screens, a fast swipe back up is the nearest thing to leaving.
    if (lastY - y > innerHeight / 3 && at - lastYAt < 300) exitIntent();
    if (at - lastYAt > 300 || y > lastY) { lastY = y; lastYAt = at; }
  }
  function exitIntent() {
    if (!config.exit || page.exit) return;
    page.exit = 1;
    send({ type: 'exit' });
  }
  function field(target) {
    return target && target.matches && target.matches('input,textarea,select,[contenteditable=""],[contenteditable=true]');
  }
  function typed(active) {
    if (active !== typing) send({ type: 'typing', active: typing = active });
  }

  // The pop-in: a card in a corner, inside a Shadow DOM so the page's CSS and ours never
  // meet, position fixed so nothing on the page moves.
  var CSS = ':host{all:initial}\
.card{box-sizing:border-box;position:relative;font:14px/1.45 system-ui,sans-serif;\
color:#1d1d1f;background:#fff;border-radius:12px;\
box-shadow:0 8px 30px #0003;padding:14px 40px 14px 16px;animation:in .25s ease-out;\
max-height:calc(100vh - 32px);overflow:auto}\
.title{font-weight:600;font-size:15px;margin:0 0 6px}.body p{margin:0 0 8px}\
.close{position:absolute;top:6px;right:6px;border:0;background:none;font-size:20px;\
line-height:1;padding:4px 8px;border-radius:6px;color:#555;cursor:pointer}\
.close:is(:hover,:focus-visible){background:#eee}\
.cta{display:inline-block;margin-top:4px;padding:8px 14px;border-radius:8px;background:#0b57d0;\
color:#fff;font-weight:600;text-decoration:none}\
@keyframes in{from{opacity:0;transform:translateY(8px)}}\
.top_bar,.bottom_bar{border-radius:0;padding:10px 48px 10px 16px;display:flex;flex-wrap:wrap;\
align-items:center;gap:4px 16px}:is(.top_bar,.bottom_bar) :is(.title,p){margin:0}\
.inline{box-shadow:none;border:1px solid #ddd;animation:none}\
.area{margin-top:6px}\
.form label{display:block;margin:6px 0;font-size:13px}.form fieldset{border:0;padding:0;margin:6px 0}\
.form legend{font-weight:600;font-size:13px}.form textarea,.form input:not([type=radio]):not([type=checkbox])\
{box-sizing:border-box;width:100%;padding:6px 8px;border:1px solid #bbb;border-radius:6px;font:inherit}\
.form :is(.slot,.choice){display:inline-block;margin:2px 4px 2px 0;padding:4px 8px;border:1px solid #bbb;\
border-radius:6px}.days{max-height:170px;overflow:auto}.error{color:#b3261e;font-size:12px;margin:2px 0}\
.notice{background:#fff4e5;padding:6px;border-radius:6px}.done{color:#0b6b2b}\
button.cta{border:0;cursor:pointer;font:inherit;font-weight:600}button.cta:disabled{opacity:.6}\
@media (prefers-reduced-motion:reduce){.card{animation:none}}';
  function report(id, status) {
    send({ type: 'popin', id: id, status: status });
  }
  function remove() {
    if (host) host.remove();
    host = current = null;
  }
  var CORNER = 'position:fixed;z-index:2147483000;width:360px;max-width:calc(100vw - 32px)';
  var PLACES = {
    corner: CORNER,
    corner_left: CORNER,
    top_bar: 'position:fixed;z-index:2147483000;left:0;right:0;top:0',
    bottom_bar: 'position:fixed;z-index:2147483000;left:0;right:0;bottom:0',
    inline: 'display:block'
  };
  function show(message) {
    // Re-sent because the acknowledgement was lost on the way: acknowledge, never repeat.
    var seen = stored('popin_seen').split(' ');
    if (seen.indexOf(message.id) >= 0) return report(message.id, 'shown');
    // A rule (or variant) may wait a moment: shown, and counted, only if the page is still here.
    if (message.delay > 0) return setTimeout(show, message.delay * 1e3, (message.delay = 0, message));
    stored('popin_seen', seen.slice(-19).concat(message.id).join(' '));
    remove();
    var slot = message.slot && d.querySelector(message.slot), id = message.id;
    if (message.slot && !slot) return report(id, 'failed');
    var card = host = d.createElement('div');
    card.setAttribute('data-popin', message.rule);
    // Through the CSSOM, never a style attribute or element: a page whose policy says
    // style-src 'self' shows the card exactly as designed.
    card.style.cssText = PLACES[message.placement] || PLACES.corner;
    var root = card.attachShadow({ mode: 'open' });
    try {
      sheet = sheet || new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
      root.innerHTML = message.html;
    } catch (e) {
      root.innerHTML = '<style>' + CSS + '</style>' + message.html;
    }
    current = { id: id, root: root, corner: !PLACES[message.placement] || !message.placement.indexOf('corner'),
      left: message.placement === 'corner_left', offset: message.offset || [16, 16] };
    root.addEventListener('submit', function (event) {
      event.preventDefault();
      var form = event.target, fields = {}, button = form.querySelector('button');
      new FormData(form).forEach(function (value, key) { fields[key] = String(value); });
      if (button) button.disabled = 1;
      send({ type: 'form', id: id, form: form.getAttribute('data-popin-form'), fields: fields });
    });
    root.addEventListener('click', function (event) {
      var target = event.target.closest('[data-popin-dismiss],a');
      if (!target) return;
      if (target.hasAttribute('data-popin-dismiss')) {
        report(id, 'dismissed');
        return remove();
      }
      // Links in a form's answer (.ics, change or cancel) work as links; the card stays.
      if (target.closest('[data-popin-area]')) return report(id, 'clicked');
      report(id, 'clicked');
      remove();
      if (target.target || event.ctrlKey || event.metaKey || event.shiftKey) return;
      // Let the report leave before the page does.
      event.preventDefault();
      var started = now();
      (function go() {
        if (ws && (outbox[0] || ws.bufferedAmount) && now() - started < 300) setTimeout(go, 20);
        else location.href = target.href;
      })();
    });
    root.addEventListener('keydown', function (event) {
      if (event.key === 'Escape') {
        report(id, 'dismissed');
        remove();
      }
    });
    (slot || d.body).appendChild(card);
    place();
    report(id, 'shown');
  }
  // A corner card keeps clear of what the page asks (data-keep-clear on the script tag, or
  // popin('keepClear', selector)) and never covers the field the visitor is typing in.
  function place() {
    if (!current || !current.corner) return;
    var style = host.style, offset = current.offset, bottom = offset[1], box, focused = d.activeElement;
    style[current.left ? 'left' : 'right'] = offset[0] + 'px';
    style.top = 'auto';
    style.bottom = bottom + 'px';
    box = host.getBoundingClientRect();
    try {
      [].forEach.call(keepClear ? d.querySelectorAll(keepClear) : [], function (element) {
        var r = element.getBoundingClientRect();
        if (r.width && overlaps(r, box)) bottom = Math.max(bottom, innerHeight - r.top + 8);
      });
    } catch (e) {}
    style.bottom = bottom + 'px';
    if (field(focused) && overlaps(focused.getBoundingClientRect(), host.getBoundingClientRect())) {
      style.bottom = 'auto';
      style.top = offset[1] + 'px';
    }
  }
  function overlaps(a, b) {
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }

  function ours(change) {
    var nodes = [].slice.call(change.addedNodes).concat([].slice.call(change.removedNodes));
    return nodes.every(function (node) { return node.nodeType === 1 && node.hasAttribute('data-popin'); });
  }
  function start() {
    'pointerdown pointermove keydown scroll wheel touchstart'.split(' ').forEach(function (name) {
      w.addEventListener(name, active, { passive: 1, capture: 1 });
    });
    w.addEventListener('scroll', scrolled, { passive: 1 });
    d.addEventListener('mouseout', function (event) {
      if (!event.relatedTarget && event.clientY <= 0) exitIntent();
    });
    d.addEventListener('visibilitychange', function () {
      if (d.hidden) return void (hiddenAt = now());
      var away = hiddenAt && (now() - hiddenAt) / 1000;
      if (config.tab && away >= config.tab) send({ type: 'tab', seconds: Math.round(away) });
      hiddenAt = 0;
    });
    d.addEventListener('focusin', function (event) { typed(!!field(event.target)); place(); });
    d.addEventListener('focusout', function () { typed(false); setTimeout(place); });
    w.addEventListener('resize', place);
    var push = history.pushState;
    history.pushState = function () {
      var result = push.apply(this, arguments);
      pageview();
      return result;
    };
    w.addEventListener('popstate', pageview);
    // Content that arrives later (SPA views, lazy sections) may hold keywords too.
    if (w.MutationObserver) new MutationObserver(function (changes) {
      if (!changes.every(ours)) scanSoon();
    }).observe(d.body, { childList: 1, subtree: 1 });
    setInterval(tick, 1000);
    pageview();
    if (preview) send({ type: 'preview', token: preview[1] });
  }

  var api = function (command) {
    if (typeof api[command] === 'function') api[command].apply(api, [].slice.call(arguments, 1));
  };
  api.loaded = 1;
  api.track = function (name, props) {
    send({ type: 'event', name: String(name), props: props || {} });
  };
  // userHash: HMAC-SHA256 of the user id with the site's identity secret, computed by the
  // site's backend; without it the server links the page to nobody.
  api.identify = function (userId, traits, userHash) {
    send({ type: 'identify', user_id: String(userId), traits: traits || {},
      user_hash: userHash ? String(userHash) : '' });
  };
  api.keepClear = function (selector) {
    keepClear = (keepClear ? keepClear + ',' : '') + selector;
    place();
  };
  api.consent = function (granted) {
    stored('popin_c', choice = granted ? '1' : '0', 1);
    remembers(!!granted, 1);
    send({ type: 'consent', granted: !!granted });
  };
  // For popin-consent.js: the latest word of each consent tool, sent now and on reconnects.
  api.signal = function (message) {
    signals[message.source] = message;
    if (ws && ws.readyState === 1) send(message);
  };
  w.popin = api;
  if (cmp) d.head.appendChild(d.createElement('script')).src = new URL('popin-consent.js', origin);
  connect();
  if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', start);
  else start();
  for (var i = 0; i < queued.length; i++) api.apply(null, queued[i]);
})(window, document);
