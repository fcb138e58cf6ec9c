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
  var SESSION_IDLE = 18e5; // 30 min, as the server
  var ACTIVE_WINDOW = 3e4; // no input for 30 s: the visitor is not reading any more
  var ws, attempts = 0, everOpened = false, outbox = [], lastUrl, lastActive = Date.now();
  var keywords = {}, observer, visible = new Map(), host, scanTimer;

  // Storage that never throws (private modes, blocked storage).
  function stored(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key) || '';
      localStorage.setItem(key, value);
    } catch (e) {}
    return '';
  }
  function newId() {
    var bytes = crypto.getRandomValues(new Uint8Array(12)), id = '';
    for (var i = 0; i < bytes.length; i++) id += (bytes[i] + 256).toString(16).slice(1);
    return id;
  }
  var visitor = stored('popin_v') || newId();
  stored('popin_v', visitor);
  function sessionId() {
    var now = Date.now(), saved = stored('popin_s').split('.');
    var id = saved[0] && now - saved[1] < SESSION_IDLE ? saved[0] : newId();
    stored('popin_s', id + '.' + now);
    return id;
  }

  function send(message) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(message));
    else if (outbox.length < 50) outbox.push(message);
  }
  function connect() {
    var opened = false;
    ws = new WebSocket(socketUrl);
    ws.onopen = function () {
      opened = everOpened = true;
      attempts = 0;
      ws.send(JSON.stringify({
        type: 'hello', visitor: visitor, session: sessionId(), url: location.href,
        referrer: d.referrer, language: navigator.language || '',
        timezone: (Intl.DateTimeFormat().resolvedOptions().timeZone || '')
      }));
      while (outbox.length) ws.send(JSON.stringify(outbox.shift()));
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message.type === 'config') configure(message.keywords || {});
      else if (message.type === 'show') show(message);
    };
    ws.onclose = function (event) {
      ws = null;
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
    for (var keyword in keywords) keywords[keyword].seconds = keywords[keyword].next = 0;
    scanSoon();
  }

  // Keyword dwell: how long text holding a keyword stayed visible while the visitor was
  // active. Only threshold crossings leave the page, never its text.
  function configure(wanted) {
    var next = {};
    for (var keyword in wanted) {
      var old = keywords[keyword] || { seconds: 0 }, thresholds = wanted[keyword], crossed = 0;
      while (crossed < thresholds.length && old.seconds >= thresholds[crossed]) crossed++;
      next[keyword] = { thresholds: thresholds, seconds: old.seconds, next: crossed };
    }
    keywords = next;
    scanSoon();
  }
  function scanSoon() {
    clearTimeout(scanTimer);
    scanTimer = setTimeout(scan, 300);
  }
  function scan() {
    if (observer) observer.disconnect();
    visible.clear();
    var list = Object.keys(keywords);
    if (!list.length || !d.body || !w.IntersectionObserver) return;
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var seen = entry.isIntersecting && (entry.intersectionRatio >= 0.5 ||
          entry.intersectionRect.height >= innerHeight / 2);
        visible.get(entry.target).on = seen;
      });
    }, { threshold: [0, 0.1, 0.25, 0.5, 0.75, 1] });
    var walker = d.createTreeWalker(d.body, 4), node;
    while ((node = walker.nextNode())) {
      var element = node.parentElement;
      if (!element || /^(SCRIPT|STYLE|NOSCRIPT|TEXTAREA|OPTION)$/.test(element.tagName)) continue;
      var text = node.nodeValue.toLowerCase();
      list.forEach(function (keyword) {
        if (text.indexOf(keyword) < 0) return;
        var entry = visible.get(element);
        if (!entry) {
          visible.set(element, entry = { on: false, keywords: {} });
          observer.observe(element);
        }
        entry.keywords[keyword] = 1;
      });
    }
  }
  function tick() {
    if (d.visibilityState !== 'visible' || Date.now() - lastActive > ACTIVE_WINDOW) return;
    var seen = {};
    visible.forEach(function (entry) {
      if (entry.on) for (var keyword in entry.keywords) seen[keyword] = 1;
    });
    for (var keyword in seen) {
      var state = keywords[keyword];
      if (!state) continue;
      state.seconds++;
      while (state.next < state.thresholds.length && state.seconds >= state.thresholds[state.next]) {
        send({ type: 'dwell', keyword: keyword, seconds: state.thresholds[state.next++] });
      }
    }
  }

  // The pop-in: a card in a corner, inside a Shadow DOM so the page's CSS and ours never
  // meet, position fixed so nothing on the page moves.
  var CSS = ':host{all:initial}' +
    '.card{box-sizing:border-box;position:relative;font:14px/1.45 system-ui,-apple-system,' +
    'Segoe UI,Roboto,sans-serif;color:#1d1d1f;background:#fff;border-radius:12px;' +
    'box-shadow:0 8px 30px rgba(0,0,0,.2);padding:14px 40px 14px 16px;animation:in .25s ease-out}' +
    '.title{font-weight:600;font-size:15px;margin:0 0 6px}.body p{margin:0 0 8px}' +
    '.close{position:absolute;top:6px;right:6px;border:0;background:none;font-size:20px;' +
    'line-height:1;padding:4px 8px;border-radius:6px;color:#555;cursor:pointer}' +
    '.close:hover,.close:focus-visible{background:#eee}' +
    '.cta{display:inline-block;margin-top:4px;padding:8px 14px;border-radius:8px;background:#0b57d0;' +
    'color:#fff;font-weight:600;text-decoration:none}' +
    '@keyframes in{from{opacity:0;transform:translateY(8px)}}' +
    '@media (prefers-reduced-motion:reduce){.card{animation:none}}';
  function report(id, status) {
    send({ type: 'popin', id: id, status: status });
  }
  function remove() {
    if (host) host.remove();
    host = null;
  }
  function show(message) {
    remove();
    var card = host = d.createElement('div'), id = message.id;
    card.setAttribute('data-popin', message.rule);
    card.style.cssText = 'position:fixed;z-index:2147483000;right:16px;bottom:16px;' +
      'width:360px;max-width:calc(100vw - 32px)';
    var root = card.attachShadow({ mode: 'open' });
    root.innerHTML = '<style>' + CSS + '</style>' + message.html;
    root.addEventListener('click', function (event) {
      var target = event.target.closest('[data-popin-dismiss],a');
      if (!target) return;
      if (target.hasAttribute('data-popin-dismiss')) {
        report(id, 'dismissed');
        return remove();
      }
      report(id, 'clicked');
      remove();
      if (target.target || event.ctrlKey || event.metaKey || event.shiftKey) return;
      // Let the report leave before the page does.
      event.preventDefault();
      var started = Date.now();
      (function go() {
        if (ws && ws.bufferedAmount && Date.now() - started < 300) setTimeout(go, 20);
        else location.href = target.href;
      })();
    });
    root.addEventListener('keydown', function (event) {
      if (event.key === 'Escape') {
        report(id, 'dismissed');
        remove();
      }
    });
    d.body.appendChild(card);
    report(id, 'shown');
  }

  function ours(change) {
    var nodes = [].slice.call(change.addedNodes).concat([].slice.call(change.removedNodes));
    return nodes.every(function (node) { return node.nodeType === 1 && node.hasAttribute('data-popin'); });
  }
  function start() {
    ['pointerdown', 'pointermove', 'keydown', 'scroll', 'wheel', 'touchstart'].forEach(function (name) {
      w.addEventListener(name, function () { lastActive = Date.now(); }, { passive: true, capture: true });
    });
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
    }).observe(d.body, { childList: true, subtree: true });
    setInterval(tick, 1000);
    pageview();
  }

  var api = function (command) {
    if (typeof api[command] === 'function') api[command].apply(api, [].slice.call(arguments, 1));
  };
  api.loaded = true;
  api.track = function (name, props) {
    send({ type: 'event', name: String(name), props: props || {} });
  };
  w.popin = api;
  connect();
  if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', start);
  else start();
  for (var i = 0; i < queued.length; i++) api.apply(null, queued[i]);
})(window, document);
