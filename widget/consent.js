/*! popin consent glue | IAB TCF v2.2 and Google Consent Mode, read for popin.js */
(function (w) {
  'use strict';
  // Loaded by popin.js only when the page has window.__tcfapi or window.dataLayer. It
  // reports what the page's consent tools say; the server maps it to what popin may do
  // (popin.toml: [sites.tcf], [sites.consent_mode]) and tells popin.js whether to keep
  // its ids. Nothing is read or written here but the tools' own answers.
  var popin = w.popin, tcf = w.__tcfapi, layer = w.dataLayer;
  // The owner's preview link (#popin-preview=): popin.js sends nothing but the preview,
  // and no consent signal either.
  if (!popin || !popin.signal || /popin-preview=/.test(location.hash)) return;

  // IAB TCF v2.2: the CMP answers addEventListener at once when it can, and again each
  // time the visitor's choice changes (including a withdrawal).
  function granted(consents) {
    var ids = [];
    for (var id in consents || {}) if (consents[id] === true && id > 0 && id < 25) ids.push(+id);
    return ids;
  }
  if (typeof tcf === 'function') {
    tcf('addEventListener', 2, function (tc, ok) {
      // 'cmpuishown': the banner is up, the visitor has not answered yet (IAB: wait for
      // 'tcloaded' or 'useractioncomplete').
      if (!ok || !tc || tc.eventStatus === 'cmpuishown') return;
      popin.signal({
        type: 'consent', source: 'tcf',
        // Undetermined counts as applying: consent is then needed.
        applies: tc.gdprApplies !== false,
        purposes: granted(tc.purpose && tc.purpose.consents),
        publisher: granted(tc.publisher && tc.publisher.consents),
        // The visitor acted in the CMP now: this word is newer than the page's own.
        action: tc.eventStatus === 'useractioncomplete' ? Date.now() : 0
      });
    });
  }

  // Google Consent Mode: gtag('consent', 'default' | 'update', {...}) queues its
  // arguments in the dataLayer; the last word for each type counts.
  var TYPES = ['ad_storage', 'ad_user_data', 'ad_personalization', 'analytics_storage',
    'functionality_storage', 'personalization_storage', 'security_storage'];
  var states = {};
  function read(entry) {
    var values = entry && entry[0] === 'consent' && /^(default|update)$/.test(entry[1]) && entry[2];
    if (!values || typeof values !== 'object') return 0;
    TYPES.forEach(function (type) {
      var value = values[type];
      // A default for some regions only: the visitor may be in them, so only its
      // refusals count.
      if (value === 'denied' || (value === 'granted' && !(entry[1] === 'default' && values.region))) {
        states[type] = value;
      }
    });
    return 1;
  }
  function tell(action) {
    popin.signal({ type: 'consent', source: 'gcm', states: states, action: action || 0 });
  }
  if (layer && typeof layer.push === 'function') {
    var said = 0;
    [].forEach.call(layer, function (entry) { said |= read(entry); });
    // A dataLayer without a consent command says nothing: with a TCF CMP on the page,
    // popin waits for the CMP's answer instead (alone, it leaves the site's mode to decide).
    if (said || typeof tcf !== 'function') tell();
    var push = layer.push;
    layer.push = function () {
      var result = push.apply(this, arguments), changed = 0;
      for (var i = 0; i < arguments.length; i++) changed |= read(arguments[i]);
      // Pushed after load: the visitor acted in the page's banner.
      if (changed) tell(Date.now());
      return result;
    };
  }
})(window);
