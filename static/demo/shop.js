// Demo shop behaviour: a cart in localStorage, and the events popin rules listen to.
var PRODUCTS = {
  skis: { name: 'Nordic Glide classic cross-country skis', price: 289 },
  wax: { name: 'Kick & glide waxing kit', price: 39 },
  poles: { name: 'Carbon cross-country poles', price: 119 },
  boots: { name: 'Classic touring boots', price: 159 }
};
function cart() {
  try { return JSON.parse(localStorage.getItem('demo_cart') || '[]'); } catch (e) { return []; }
}
function saveCart(items) {
  localStorage.setItem('demo_cart', JSON.stringify(items));
  var count = document.getElementById('cart-count');
  if (count) count.textContent = items.length;
}
function addToCart(sku) {
  var items = cart();
  items.push(sku);
  saveCart(items);
  popin('track', 'add_to_cart', { sku: sku, name: PRODUCTS[sku].name, price: PRODUCTS[sku].price, items: items.length });
  var note = document.getElementById('added');
  if (note) note.hidden = false;
}
function cartTotal(items) {
  return items.reduce(function (sum, sku) { return sum + PRODUCTS[sku].price; }, 0);
}
function renderCart() {
  var items = cart(), body = document.getElementById('cart-lines');
  if (!body) return;
  body.innerHTML = items.map(function (sku, i) {
    return '<tr><td>' + PRODUCTS[sku].name + '</td><td>' + PRODUCTS[sku].price + ' €</td>' +
      '<td><button onclick="removeFromCart(' + i + ')">Remove</button></td></tr>';
  }).join('') || '<tr><td colspan="3">Your cart is empty.</td></tr>';
  document.getElementById('cart-total').textContent = cartTotal(items) + ' €';
}
function removeFromCart(index) {
  var items = cart(), sku = items.splice(index, 1)[0];
  saveCart(items);
  popin('track', 'remove_from_cart', { sku: sku, items: items.length });
  renderCart();
}
function placeOrder(event) {
  event.preventDefault();
  var items = cart();
  popin('track', 'order_placed', { value: cartTotal(items), items: items.length });
  saveCart([]);
  document.getElementById('checkout-form').hidden = true;
  document.getElementById('thanks').hidden = false;
}
function search() {
  var query = new URLSearchParams(location.search).get('q') || '';
  var out = document.getElementById('results');
  if (!out) return;
  document.getElementById('query').textContent = query;
  var words = query.toLowerCase().split(/\s+/).filter(Boolean);
  var found = Object.keys(PRODUCTS).filter(function (sku) {
    return words.some(function (w) { return PRODUCTS[sku].name.toLowerCase().indexOf(w) >= 0 || sku.indexOf(w) >= 0; });
  });
  out.innerHTML = found.map(function (sku) {
    return '<li><a href="' + sku + '.html">' + PRODUCTS[sku].name + '</a></li>';
  }).join('') || '<li>No product matches.</li>';
  if (query) popin('track', 'search', { query: query.slice(0, 200), results: found.length });
}
document.addEventListener('DOMContentLoaded', function () {
  saveCart(cart());
  renderCart();
  search();
});
function signUp(event) {
  event.preventDefault();
  var form = event.target;
  popin('track', 'signup', { first_name: form.first_name.value.slice(0, 40) });
  form.hidden = true;
  document.getElementById('signed-up').hidden = false;
}
