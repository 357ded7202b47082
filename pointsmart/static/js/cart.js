/* The counter's live cart (form[data-cart]) and single submission of any form[data-once].
 *
 * Cart: step buttons and typing keep each quantity within 0..min(max, data-stock), and the line
 * totals, the total and what remains of data-balance follow; a cart that is empty or over the
 * balance cannot be submitted. Without JavaScript the form still posts the typed quantities, and
 * the server checks everything again either way.
 * Once: after the first submit of a form[data-once] its submit buttons are disabled, so a double tap
 * sends one request. Include this file on every page that has such a form.
 * Plain ES2017 without modules: it runs in WeChat's X5 and old Android WebViews.
 */
(function () {
  "use strict";

  // A whole number, or NaN for anything else (including a missing attribute or an empty field).
  function number(value) {
    if (value === null || String(value).trim() === "") {
      return NaN;
    }
    var n = Math.floor(Number(value));
    return isFinite(n) ? n : NaN;
  }

  function each(root, selector, fn) {
    Array.prototype.forEach.call(root.querySelectorAll(selector), fn);
  }

  // --- cart ---

  function Line(element) {
    this.element = element;
    this.input = element.querySelector('input[type="number"], input[name]');
    this.price = number(element.getAttribute("data-price")) || 0;
    var max = number(this.input.getAttribute("max"));
    var stock = number(element.getAttribute("data-stock"));
    this.cap = Math.min(isNaN(max) ? Infinity : max, isNaN(stock) ? Infinity : stock);
    this.total = element.querySelector("[data-line-total]");
    this.minus = element.querySelector('[data-step^="-"]');
    this.plus = element.querySelector('[data-step]:not([data-step^="-"])');
  }

  // The quantity as it counts: non-numbers and negatives are 0, more than the cap is the cap.
  Line.prototype.quantity = function () {
    var n = number(this.input.value);
    return isNaN(n) || n < 0 ? 0 : Math.min(n, this.cap);
  };

  Line.prototype.set = function (quantity) {
    this.input.value = String(Math.max(0, Math.min(quantity, this.cap)));
  };

  function Cart(form) {
    this.form = form;
    this.balance = number(form.getAttribute("data-balance")) || 0;
    this.lines = [];
    var self = this;
    each(form, "[data-item]", function (element) {
      self.lines.push(new Line(element));
    });
    this.totalOut = form.querySelector("[data-cart-total]");
    this.remainingOut = form.querySelector("[data-cart-remaining]");
    this.overNote = form.querySelector("[data-cart-over]");
    this.submit = form.querySelector("[data-cart-submit]");

    this.lines.forEach(function (line) {
      each(line.element, "[data-step]", function (button) {
        button.addEventListener("click", function () {
          line.set(line.quantity() + (number(button.getAttribute("data-step")) || 0));
          self.update();
        });
      });
      line.input.addEventListener("input", function () {
        // Fix only what is out of range, so the clerk can still clear the field and retype.
        var n = number(line.input.value);
        if (!isNaN(n) && (n < 0 || n > line.cap)) {
          line.set(n);
        }
        self.update();
      });
      line.input.addEventListener("change", function () {
        line.set(line.quantity()); // on leaving the field: a clean whole number
        self.update();
      });
    });
    this.update();
  }

  Cart.prototype.update = function () {
    var total = 0;
    this.lines.forEach(function (line) {
      var quantity = line.quantity();
      var amount = quantity * line.price;
      total += amount;
      if (line.total) {
        line.total.textContent = quantity ? String(amount) : "";
      }
      line.element.classList.toggle("in-cart", quantity > 0);
      if (line.minus) {
        line.minus.disabled = quantity <= 0;
      }
      if (line.plus) {
        line.plus.disabled = quantity >= line.cap;
      }
    });
    var remaining = this.balance - total;
    var over = remaining < 0;
    if (this.totalOut) {
      this.totalOut.textContent = String(total);
    }
    if (this.remainingOut) {
      this.remainingOut.textContent = String(remaining);
    }
    if (this.overNote) {
      this.overNote.hidden = !over;
    }
    this.form.classList.toggle("over", over);
    if (this.submit) {
      this.submit.disabled = over || total === 0 || sent(this.form);
    }
  };

  // --- once ---

  // aria-busy marks a form whose submission is on its way (and lets CSS show it).
  function sent(form) {
    return form.getAttribute("aria-busy") === "true";
  }

  function submitButtons(form) {
    return form.querySelectorAll('button:not([type]), button[type="submit"], input[type="submit"]');
  }

  function onSubmit(event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-once") || event.defaultPrevented) {
      return; // another handler stopped this submission: the form stays usable
    }
    if (sent(form)) {
      event.preventDefault(); // the second tap of a double tap
      return;
    }
    form.setAttribute("aria-busy", "true");
    // Disable after the form data is built: a disabled submitter would drop its name=value.
    setTimeout(function () {
      Array.prototype.forEach.call(submitButtons(form), function (button) {
        if (!button.disabled) {
          button.disabled = true;
          button.setAttribute("data-once-disabled", "");
        }
      });
    }, 0);
  }

  // A page restored from the back/forward cache is usable again.
  function onPageShow(event, carts) {
    if (event.persisted) {
      each(document, "form[data-once]", function (form) {
        form.removeAttribute("aria-busy");
        each(form, "[data-once-disabled]", function (button) {
          button.disabled = false;
          button.removeAttribute("data-once-disabled");
        });
      });
    }
    // Also after a reload or back navigation that restored the typed quantities.
    carts.forEach(function (cart) {
      cart.update();
    });
  }

  function init() {
    var carts = [];
    each(document, "form[data-cart]", function (form) {
      carts.push(new Cart(form));
    });
    // Bubbling to the document, this runs after the form's own submit handlers.
    document.addEventListener("submit", onSubmit);
    window.addEventListener("pageshow", function (event) {
      onPageShow(event, carts);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
