/* Security keys (WebAuthn) on the two-factor page and the sign-in code step, through
   allauth's webauthn-json (window.webauthnJSON). The buttons stay hidden where the
   browser cannot use a key here (their hidden box is shown): no WebAuthn, not a secure
   context, or an IP address (browsers accept only a host name as the relying party). */
(function () {
  'use strict'

  function isIpAddress (host) {
    return /^[0-9.]+$/.test(host) || host.indexOf(':') !== -1 || host.charAt(0) === '['
  }

  function usable () {
    return !!(window.webauthnJSON && window.webauthnJSON.supported() && window.isSecureContext &&
              !isIpAddress(window.location.hostname))
  }

  function say (text) {
    const status = document.getElementById('key-status')
    if (status) {
      status.textContent = text
      status.hidden = false
    }
  }

  function failure (e) {
    const reason = e && e.name === 'NotAllowedError'
      ? 'the request was cancelled or timed out'
      : (e && e.message) || String(e)
    say('The security key did not answer: ' + reason + '. Try again.')
  }

  function reveal (button) {
    if (usable()) {
      const box = button.closest('[hidden]')
      if (box) box.hidden = false
      return true
    }
    const note = document.getElementById('key-unavailable')
    if (note) note.hidden = false
    return false
  }

  const add = document.getElementById('key-add')
  if (add && reveal(add)) {
    add.addEventListener('click', async function () {
      const form = add.form
      if (!form.reportValidity()) return
      add.disabled = true
      try {
        const options = JSON.parse(document.getElementById('webauthn-creation-options').textContent)
        const credential = await window.webauthnJSON.create(options)
        document.getElementById('key-credential').value = JSON.stringify(credential)
        form.submit()
      } catch (e) {
        add.disabled = false
        failure(e)
      }
    })
  }

  const use = document.getElementById('key-use')
  if (use && reveal(use)) {
    use.addEventListener('click', async function () {
      const form = use.form
      use.disabled = true
      try {
        const response = await fetch(form.action, { headers: { Accept: 'application/json' }, credentials: 'same-origin' })
        if (!response.ok) throw new Error('the sign-in expired; start over')
        const data = await response.json()
        const credential = await window.webauthnJSON.get(data.request_options)
        document.getElementById('key-login-credential').value = JSON.stringify(credential)
        form.submit()
      } catch (e) {
        use.disabled = false
        failure(e)
      }
    })
  }
})()
