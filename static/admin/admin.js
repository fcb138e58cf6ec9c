// Live counters on the overview: visitors now, pop-ins seen in the last minutes.
(function () {
  'use strict';
  var fields = document.querySelectorAll('[data-live]');
  if (!fields.length) return;
  function refresh() {
    fetch('/admin/live' + location.search, { credentials: 'same-origin' })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (live) {
        if (!live) return;
        fields.forEach(function (field) { field.textContent = live[field.getAttribute('data-live')]; });
      })
      .catch(function () {});
  }
  setInterval(refresh, 5000);
})();

// A campaign's Delete asks first (its file goes; the history keeps its last version).
document.querySelectorAll('[data-delete]').forEach(function (button) {
  button.addEventListener('click', function (event) {
    if (!window.confirm('Delete this campaign? Its file is changed (or removed) at once.')) event.preventDefault();
  });
});
