// Interface text in English and Vietnamese; the browser's language picks, the switch overrides.
const STRINGS = {
  en: {
    tagline: "End-to-end encrypted chat for your organisation",
    login: "Log in", register: "Create account", username: "Username", password: "Password",
    working: "Working…", logout: "Log out", wipe: "Also erase this device's keys from this browser",
    logoutConfirm: "Log out", cancel: "Cancel",
    newChat: "New conversation", people: "People (usernames, separated by commas)",
    groupName: "Group name (optional)", start: "Start", conversations: "Conversations",
    noConversations: "No conversations yet. Start one with someone's username.",
    pick: "Pick a conversation, or start a new one.", back: "Back",
    message: "Message", send: "Send", you: "you", typing: "is typing…",
    online: "Connected", offline: "Reconnecting…", encrypted: "Messages are end-to-end encrypted",
    safety: "Safety number", safetyHelp: "Compare these numbers with {name}'s screen, in person or on a call. If they match, your conversation is protected.",
    verified: "Verified", notVerified: "Not verified", markVerified: "Numbers match: mark verified",
    close: "Close", keyChanged: "{name}'s security keys changed. Messages were not sent.",
    review: "Review", accept: "Accept new keys", newDevice: "{name} added a device; the safety number changed.", ownNewDevice: "A new device was added to your account. If it was not you, change your password and log that device out.",
    undecryptable: "Could not decrypt this message ({code}).", beforeThisDevice: "A message from {name} sent before this device was added: it is not on this device.", started: "{actor} started the conversation",
    added: "{actor} added {user}", removed: "{actor} removed {user}", left: "{user} left",
    delivered: "Delivered", read: "Read", sent: "Sent", members: "{n} members",
    charsLeft: "{n} characters left", charsOver: "{n} characters too many", tooLong: "Not sent: this message is about {n} characters too long. Shorten it; the text is still here.",
    request: "Request", requestFrom: "{name} wants to message you. They will not see that you read this until you accept or reply.",
    requestAccept: "Accept", requestDecline: "Delete", requestBlock: "Block {name}",
    language: "Language", membersTitle: "Members", addMember: "Add a member (username)",
    add: "Add", remove: "Remove", leave: "Leave the group", leaveConfirm: "Really leave? You will stop getting its messages.", admin: "admin",
    sendFailed: "Not sent ({reason}). Your text is back in the box; try again.",
    missedVideo: "Missed video call from {caller} · {at}", missedVoice: "Missed voice call from {caller} · {at}",
    declinedVideo: "Declined video call from {caller} · {at}", declinedVoice: "Declined voice call from {caller} · {at}",
    endedVideo: "Video call · {at} · {minutes} min · {people}", endedVoice: "Voice call · {at} · {minutes} min · {people}",
    voiceCallButton: "Voice call", videoCallButton: "Video call", joinCall: "Join call",
    incomingVideo: "{caller} is video calling…", incomingVoice: "{caller} is calling…",
    accept: "Accept", acceptAudio: "Audio only", decline: "Decline", leaveCall: "Leave", mute: "Mute", unmute: "Unmute",
    cameraOff: "Camera off", cameraOn: "Camera on", shareScreen: "Share screen", devices: "Devices",
    microphone: "Microphone", camera: "Camera", muted: "muted", cameraIsOff: "camera off", sharingScreen: "sharing screen",
    e2eeOn: "End-to-end encrypted", waitingKeys: "Waiting for keys…", reconnecting: "Reconnecting…",
    noE2eeBrowser: "This browser cannot encrypt calls end to end, so calls are off here. Use a current Chrome, Chromium, Edge or Safari.",
    callsUnavailable: "Calls are unavailable right now. Try again in a few minutes.",
    loginThrottled: "Too many failed attempts. Try again in {s} s.",
    security: "Security", totpTitle: "Two-step verification", totpCode: "Code from your authenticator app",
    totpPrompt: "Enter the code from your authenticator app (or a recovery code).", totpWrong: "That code is wrong or was already used.",
    totpOff: "Off. With it on, logging in also needs a code from an app on your phone.", totpBegin: "Turn on",
    totpScan: "Scan this QR code with your authenticator app, then enter the code it shows.", totpKey: "Or type this key:",
    totpConfirm: "Confirm", totpOn: "On. {n} recovery codes left. To turn it off, enter your password and a code.",
    emailTitle: "Email for security notices", emailAddress: "Email address", emailCode: "Code from the email",
    emailSend: "Send a code", emailVerify: "Verify", emailIs: "Notices go to {address}.", emailNone: "No address: you get no security notices by email.",
    emailSent: "A code was sent to {address}. Enter it here.",
    mustChange: "Your administrator logged out every device of your account for your safety. Choose a new password; this device will then make new security keys, and your contacts will be asked to check your safety number again.",
    changePassword: "Change password", passwordCurrent: "Current password", passwordNew: "New password (at least 12 characters)",
    passwordAgain: "New password again", passwordMismatch: "The two new passwords differ.",
    passwordChanged: "Password changed. {n} other session(s) were logged out.",
    reply: "Reply", edit: "Edit", deleteForEveryone: "Delete for everyone", deleteConfirm: "Delete this message for everyone? It is deleted on every device and cannot come back.",
    deletedMessage: "This message was deleted.", edited: "edited", replyingTo: "Replying to {name}", editing: "Editing your message",
    cancelCompose: "Cancel", quoteMissing: "an earlier message", reactWith: "React with {emoji}", removeReaction: "Take back {emoji}",
    today: "Today", yesterday: "Yesterday", youPrefix: "You: ", mute: "Mute", unmute: "Unmute", mutedLabel: "muted",
    appearance: "Appearance", themeSystem: "Same as the system", themeLight: "Light", themeDark: "Dark",
    notifyTitle: "Notifications", notifyOn: "Desktop notifications while this tab is in the background",
    notifyText: "Show the message's text in notifications", notifyDenied: "This browser blocks notifications from this site: allow them in its site settings.",
    newMessage: "New message", openLink: "Opens in a new tab",
    suggestTitle: "Suggested replies", settings: "Settings",
    suggestWhere: "Suggested replies are computed on this device from the messages it decrypted; no text leaves it for them.",
    suggestDevice: "Suggest replies on this device", suggestHere: "Suggest replies in this conversation",
    suggestUnavailable: "Suggested replies are unavailable right now: the suggestion data could not be loaded and checked.",
    totpDisable: "Turn off", recoveryHelp: "On. Keep these recovery codes somewhere safe: each logs you in once without your phone. They are shown only now.",
  },
  vi: {
    tagline: "Trò chuyện mã hóa đầu cuối cho tổ chức của bạn",
    login: "Đăng nhập", register: "Tạo tài khoản", username: "Tên người dùng", password: "Mật khẩu",
    working: "Đang xử lý…", logout: "Đăng xuất", wipe: "Xóa luôn khóa của thiết bị này khỏi trình duyệt",
    logoutConfirm: "Đăng xuất", cancel: "Hủy",
    newChat: "Cuộc trò chuyện mới", people: "Người tham gia (tên người dùng, cách nhau bởi dấu phẩy)",
    groupName: "Tên nhóm (không bắt buộc)", start: "Bắt đầu", conversations: "Cuộc trò chuyện",
    noConversations: "Chưa có cuộc trò chuyện nào. Hãy bắt đầu bằng tên người dùng của ai đó.",
    pick: "Chọn một cuộc trò chuyện hoặc bắt đầu cuộc mới.", back: "Quay lại",
    message: "Tin nhắn", send: "Gửi", you: "bạn", typing: "đang nhập…",
    online: "Đã kết nối", offline: "Đang kết nối lại…", encrypted: "Tin nhắn được mã hóa đầu cuối",
    safety: "Mã an toàn", safetyHelp: "So sánh dãy số này với màn hình của {name}, trực tiếp hoặc qua cuộc gọi. Nếu trùng khớp, cuộc trò chuyện được bảo vệ.",
    verified: "Đã xác minh", notVerified: "Chưa xác minh", markVerified: "Trùng khớp: đánh dấu đã xác minh",
    close: "Đóng", keyChanged: "Khóa bảo mật của {name} đã thay đổi. Tin nhắn chưa được gửi.",
    review: "Xem lại", accept: "Chấp nhận khóa mới", newDevice: "{name} đã thêm thiết bị; mã an toàn đã thay đổi.", ownNewDevice: "Một thiết bị mới đã được thêm vào tài khoản của bạn. Nếu không phải bạn, hãy đổi mật khẩu và đăng xuất thiết bị đó.",
    undecryptable: "Không giải mã được tin nhắn này ({code}).", beforeThisDevice: "Tin nhắn của {name} được gửi trước khi thêm thiết bị này: nó không có trên thiết bị này.", started: "{actor} đã bắt đầu cuộc trò chuyện",
    added: "{actor} đã thêm {user}", removed: "{actor} đã xóa {user}", left: "{user} đã rời nhóm",
    delivered: "Đã nhận", read: "Đã xem", sent: "Đã gửi", members: "{n} thành viên",
    charsLeft: "Còn {n} ký tự", charsOver: "Thừa {n} ký tự", tooLong: "Chưa gửi: tin nhắn dài quá khoảng {n} ký tự. Hãy rút gọn; nội dung vẫn còn đây.",
    request: "Yêu cầu", requestFrom: "{name} muốn nhắn tin với bạn. Họ sẽ không biết bạn đã đọc cho đến khi bạn chấp nhận hoặc trả lời.",
    requestAccept: "Chấp nhận", requestDecline: "Xóa", requestBlock: "Chặn {name}",
    language: "Ngôn ngữ", membersTitle: "Thành viên", addMember: "Thêm thành viên (tên người dùng)",
    add: "Thêm", remove: "Xóa", leave: "Rời nhóm", leaveConfirm: "Rời nhóm thật chứ? Bạn sẽ không nhận tin nhắn của nhóm nữa.", admin: "quản trị",
    sendFailed: "Chưa gửi được ({reason}). Tin nhắn vẫn còn trong ô soạn; hãy thử lại.",
    missedVideo: "Cuộc gọi video nhỡ từ {caller} · {at}", missedVoice: "Cuộc gọi thoại nhỡ từ {caller} · {at}",
    declinedVideo: "Đã từ chối cuộc gọi video từ {caller} · {at}", declinedVoice: "Đã từ chối cuộc gọi thoại từ {caller} · {at}",
    endedVideo: "Cuộc gọi video · {at} · {minutes} phút · {people}", endedVoice: "Cuộc gọi thoại · {at} · {minutes} phút · {people}",
    voiceCallButton: "Gọi thoại", videoCallButton: "Gọi video", joinCall: "Tham gia cuộc gọi",
    incomingVideo: "{caller} đang gọi video…", incomingVoice: "{caller} đang gọi…",
    accept: "Nghe", acceptAudio: "Chỉ nghe tiếng", decline: "Từ chối", leaveCall: "Rời cuộc gọi", mute: "Tắt mic", unmute: "Bật mic",
    cameraOff: "Tắt camera", cameraOn: "Bật camera", shareScreen: "Chia sẻ màn hình", devices: "Thiết bị",
    microphone: "Micro", camera: "Camera", muted: "tắt mic", cameraIsOff: "tắt camera", sharingScreen: "đang chia sẻ màn hình",
    e2eeOn: "Mã hóa đầu cuối", waitingKeys: "Đang chờ khóa…", reconnecting: "Đang kết nối lại…",
    noE2eeBrowser: "Trình duyệt này không mã hóa đầu cuối được cuộc gọi, nên cuộc gọi bị tắt ở đây. Hãy dùng Chrome, Chromium, Edge hoặc Safari bản mới.",
    callsUnavailable: "Hiện không gọi được. Hãy thử lại sau vài phút.",
    loginThrottled: "Sai quá nhiều lần. Hãy thử lại sau {s} giây.",
    security: "Bảo mật", totpTitle: "Xác minh hai bước", totpCode: "Mã từ ứng dụng xác thực",
    totpPrompt: "Nhập mã từ ứng dụng xác thực (hoặc một mã khôi phục).", totpWrong: "Mã sai hoặc đã được dùng.",
    totpOff: "Đang tắt. Khi bật, đăng nhập cần thêm mã từ ứng dụng trên điện thoại.", totpBegin: "Bật",
    totpScan: "Quét mã QR này bằng ứng dụng xác thực, rồi nhập mã ứng dụng hiển thị.", totpKey: "Hoặc nhập khoá này:",
    totpConfirm: "Xác nhận", totpOn: "Đang bật. Còn {n} mã khôi phục. Để tắt, nhập mật khẩu và một mã.",
    emailTitle: "Email nhận thông báo bảo mật", emailAddress: "Địa chỉ email", emailCode: "Mã trong email",
    emailSend: "Gửi mã", emailVerify: "Xác minh", emailIs: "Thông báo gửi tới {address}.", emailNone: "Chưa có địa chỉ: bạn không nhận thông báo bảo mật qua email.",
    emailSent: "Đã gửi mã tới {address}. Hãy nhập mã ở đây.",
    mustChange: "Quản trị viên đã đăng xuất mọi thiết bị của tài khoản bạn để bảo vệ bạn. Hãy chọn mật khẩu mới; sau đó thiết bị này sẽ tạo khoá bảo mật mới, và người liên hệ sẽ được nhắc kiểm tra lại safety number.",
    changePassword: "Đổi mật khẩu", passwordCurrent: "Mật khẩu hiện tại", passwordNew: "Mật khẩu mới (ít nhất 12 ký tự)",
    passwordAgain: "Nhập lại mật khẩu mới", passwordMismatch: "Hai mật khẩu mới không giống nhau.",
    passwordChanged: "Đã đổi mật khẩu. {n} phiên khác đã bị đăng xuất.",
    reply: "Trả lời", edit: "Sửa", deleteForEveryone: "Xóa với mọi người", deleteConfirm: "Xóa tin nhắn này với mọi người? Nó bị xóa trên mọi thiết bị và không khôi phục được.",
    deletedMessage: "Tin nhắn này đã bị xóa.", edited: "đã sửa", replyingTo: "Đang trả lời {name}", editing: "Đang sửa tin nhắn của bạn",
    cancelCompose: "Hủy", quoteMissing: "một tin nhắn trước đó", reactWith: "Bày tỏ cảm xúc {emoji}", removeReaction: "Bỏ {emoji}",
    today: "Hôm nay", yesterday: "Hôm qua", youPrefix: "Bạn: ", mute: "Tắt thông báo", unmute: "Bật thông báo", mutedLabel: "đã tắt thông báo",
    appearance: "Giao diện", themeSystem: "Theo hệ thống", themeLight: "Sáng", themeDark: "Tối",
    notifyTitle: "Thông báo", notifyOn: "Thông báo trên màn hình khi thẻ này đang ở chế độ nền",
    notifyText: "Hiện nội dung tin nhắn trong thông báo", notifyDenied: "Trình duyệt đang chặn thông báo từ trang này: hãy cho phép trong phần cài đặt trang.",
    newMessage: "Tin nhắn mới", openLink: "Mở trong thẻ mới",
    suggestTitle: "Gợi ý trả lời", settings: "Cài đặt",
    suggestWhere: "Gợi ý trả lời được tính ngay trên thiết bị này từ những tin nhắn nó đã giải mã; không có nội dung nào rời khỏi thiết bị để làm việc này.",
    suggestDevice: "Gợi ý trả lời trên thiết bị này", suggestHere: "Gợi ý trả lời trong cuộc trò chuyện này",
    suggestUnavailable: "Hiện chưa có gợi ý trả lời: không tải và kiểm tra được dữ liệu gợi ý.",
    totpDisable: "Tắt", recoveryHelp: "Đã bật. Hãy cất các mã khôi phục này ở nơi an toàn: mỗi mã đăng nhập được một lần khi không có điện thoại. Chúng chỉ hiện lúc này.",
  },
};

// What the server's error codes mean, for people, in each language; a code not listed here shows
// the server's own message (English).
const ERRORS = {
  en: {
    invalid_username: "Usernames are 3-32 characters: letters, digits, '.', '_' or '-', starting with a letter or digit.",
    username_taken: "That username is taken: choose another.",
    invalid_credentials: "Wrong username or password.",
    weak_password: "This password is too easy to guess: use at least 12 characters, not your username, not a common password.",
    same_password: "The new password must differ from the current one.",
    invalid_totp_code: "That code is wrong or was already used.",
    rate_limited: "Too many requests: wait a moment and try again.",
    offline: "Cannot reach the server.",
    timeout: "The server did not answer in time.",
    not_a_member: "You are no longer a member of this conversation.",
    user_not_found: "No such user: {names}.",
  },
  vi: {
    invalid_username: "Tên người dùng dài 3-32 ký tự: chữ, số, '.', '_' hoặc '-', bắt đầu bằng chữ hoặc số.",
    username_taken: "Tên người dùng này đã có người dùng: hãy chọn tên khác.",
    invalid_credentials: "Sai tên người dùng hoặc mật khẩu.",
    weak_password: "Mật khẩu này quá dễ đoán: dùng ít nhất 12 ký tự, không chứa tên người dùng, không phải mật khẩu phổ biến.",
    same_password: "Mật khẩu mới phải khác mật khẩu hiện tại.",
    invalid_totp_code: "Mã không đúng hoặc đã được dùng.",
    rate_limited: "Quá nhiều yêu cầu: hãy đợi một lát rồi thử lại.",
    offline: "Không kết nối được tới máy chủ.",
    timeout: "Máy chủ không trả lời kịp.",
    not_a_member: "Bạn không còn là thành viên của cuộc trò chuyện này.",
    user_not_found: "Không có người dùng: {names}.",
  },
};

// An error for a person: by its code in the interface's language, else the server's message.
export function explain(error) {
  const text = error && error.code && (ERRORS[current] || ERRORS.en)[error.code];
  if (!text) return error ? error.message : "";
  const names = String(error.message || "").split(": ").slice(1).join(": ");
  return text.replace("{names}", names);
}

let current = localStorage.getItem("sc-lang")
  || ((navigator.language || "en").toLowerCase().startsWith("vi") ? "vi" : "en");

export function lang() { return current; }

export function setLang(value) {
  current = STRINGS[value] ? value : "en";
  localStorage.setItem("sc-lang", current);
  document.documentElement.lang = current;
}

export function t(key, vars = {}) {
  const text = (STRINGS[current] && STRINGS[current][key]) || STRINGS.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? vars[k] : `{${k}}`));
}
