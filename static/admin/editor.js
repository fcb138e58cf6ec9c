// The campaign editor: only the fields of the chosen trigger and action in view, and the
// card re-rendered as the owner types, by the server (the same rendering as for visitors)
// inside a Shadow DOM with the widget's own styles, at desktop and phone widths.
(function () {
  'use strict';
  var form = document.querySelector('form[data-editor]');
  if (!form) return;
  var sentence = document.querySelector('[data-sentence]');
  var notice = document.querySelector('[data-notice]');
  var warning = document.querySelector('[data-warning]');
  var yaml = document.querySelector('[data-yaml]');
  var variant = document.querySelector('[data-variant]');
  var visitor = document.querySelector('[data-visitor]');
  var editor = form.parentNode;
  var aside = document.querySelector('.live-preview');
  var toggle = document.querySelector('[data-preview-toggle]');
  var timer, last, asked = 0;

  function sync() {
    var chosen = { trigger: form.elements.trigger.value, show: form.elements.show.value };
    form.querySelectorAll('[data-only]').forEach(function (field) {
      var only = field.getAttribute('data-only').split(':');
      field.hidden = chosen[only[0]] !== only[1];
    });
  }

  function variants() {
    var wanted = [''];
    for (var n = 0; form.elements['variants.' + n + '.id']; n++) {
      var id = form.elements['variants.' + n + '.id'].value.trim();
      if (id) wanted.push(id);
    }
    var have = [].map.call(variant.options, function (option) { return option.value; });
    if (have.join() === wanted.join()) return;
    var current = variant.value;
    variant.textContent = '';
    wanted.forEach(function (id) {
      var option = document.createElement('option');
      option.value = id;
      option.textContent = id || 'as written';
      variant.appendChild(option);
    });
    variant.value = wanted.indexOf(current) >= 0 ? current : '';
  }

  function show(answer) {
    document.querySelectorAll('[data-device]').forEach(function (frame) {
      var host = frame.querySelector('.card-host');
      if (!host) {
        host = document.createElement('div');
        host.className = 'card-host';
        host.attachShadow({ mode: 'open' });
        frame.appendChild(host);
      }
      host.setAttribute('data-placement', answer.placement || 'corner');
      host.setAttribute('data-popin', 'preview');
      host.shadowRoot.innerHTML = answer.html
        ? '<link rel="stylesheet" href="/admin/card.css">' + answer.html : '';
    });
    sentence.textContent = answer.sentence || '';
    yaml.textContent = answer.yaml || '';
    notice.hidden = !answer.notice;
    notice.textContent = answer.notice || '';
    warning.hidden = !answer.warning;
    warning.textContent = answer.warning || '';
    document.querySelectorAll('[data-live-error]').forEach(function (line) {
      line.hidden = true;
      line.textContent = '';
    });
    (answer.errors || []).forEach(function (error) {
      var line = document.querySelector('[data-live-error="' + (error.field || 'campaign') + '"]') ||
        document.querySelector('[data-live-error="campaign"]');
      line.hidden = false;
      line.textContent += (line.textContent ? ' ' : '') + error.message;
    });
    if (answer.error) notice.hidden = false, notice.textContent = answer.error.message;
  }

  // A phone: the preview opens as a sheet over the top of the screen (see admin.css); the
  // field being typed in is scrolled to just below it, so card and field are both in view.
  function keepInView(field) {
    if (!editor.classList.contains('previewing') || !field || !form.contains(field)) return;
    if (getComputedStyle(aside).position !== 'fixed') return;
    var sheet = aside.getBoundingClientRect(), box = field.getBoundingClientRect();
    if (box.top < sheet.bottom + 8 || box.bottom > window.innerHeight - toggle.offsetHeight) {
      window.scrollBy(0, box.top - sheet.bottom - 8);
    }
  }

  function opened(yes) {
    editor.classList.toggle('previewing', yes);
    toggle.setAttribute('aria-expanded', String(yes));
    toggle.textContent = yes ? 'Hide preview' : 'Show preview';
    keepInView(last);
  }

  function refresh() {
    var mine = ++asked, body = new FormData(form);
    body.append('preview_variant', variant.value);
    body.append('preview_visitor', visitor.value);
    fetch(form.getAttribute('data-preview'), { method: 'POST', body: body, credentials: 'same-origin' })
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        if (mine !== asked) return;
        show(answer);
        keepInView(document.activeElement);
      })
      .catch(function () {});
  }

  function changed() {
    sync();
    variants();
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
  }
  form.addEventListener('input', changed);
  form.addEventListener('change', changed);
  variant.addEventListener('change', refresh);
  visitor.addEventListener('change', refresh);
  form.addEventListener('focusin', function (event) {
    last = event.target;
    keepInView(last);
  });
  toggle.addEventListener('click', function () {
    opened(!editor.classList.contains('previewing'));
  });
  editor.classList.add('scripted');
  sync();
  variants();
  refresh();
})();
