function f(t,s,n){let o=structuredClone(t.get("snapshot")||{seq:0}),a=0,d=()=>{let c=t.get("snapshot");c&&c.seq>=o.seq&&(o=structuredClone(c),n(o,!0))},l=(c,b)=>{!c||c.kind!=="delta"||(c.base===o.seq?(s(o,c,b||[]),o.seq=c.seq,n(o,!1)):c.seq>o.seq&&Date.now()-a>1e3&&(a=Date.now(),t.send({kind:"resync"})))};return t.on("change:snapshot",d),t.on("msg:custom",l),n(o,!0),g(t,!0),()=>{t.off("change:snapshot",d),t.off("msg:custom",l),g(t,!1)}}function g(t,s){try{t.send({kind:"view",on:s})}catch{}}function u(t,s){if(document.getElementById(t))return;let n=document.createElement("style");n.id=t,n.textContent=s,document.head.appendChild(n)}var m=`
.nbc-widget { font-family: var(--jp-ui-font-family, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, #222);
  padding: 4px 0; }
.nbc-title { font-weight: 600; margin-bottom: 4px; }
.nbc-muted { color: var(--jp-ui-font-color2, #666); }
.nbc-widget table { border-collapse: collapse; }
.nbc-widget th { text-align: left; font-weight: 600; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); }
.nbc-widget td { padding: 2px 8px; }
.nbc-bar { display: flex; height: 10px; border-radius: 3px; overflow: hidden;
  background: var(--jp-layout-color2, #eee); }
.nbc-button { font: inherit; color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color2, #eee); border: 1px solid var(--jp-border-color1, #bbb);
  border-radius: 3px; padding: 1px 10px; cursor: pointer; }
.nbc-button:disabled { opacity: 0.5; cursor: default; }
.nbc-error { color: var(--jp-error-color1, #d32f2f); white-space: pre-wrap; }
`;function e(t,s={},...n){let o=document.createElement(t);for(let[a,d]of Object.entries(s))d!=null&&(a==="class"?o.className=String(d):a==="style"?o.setAttribute("style",String(d)):a.startsWith("on")?o[a]=d:o.setAttribute(a,String(d)));for(let a of n)o.append(a);return o}function i(t){if(t==null)return"?";let s=["B","KB","MB","GB","TB"],n=0;for(;Math.abs(t)>=1e3&&n<s.length-1;)t/=1e3,n++;return n===0?`${t.toFixed(0)} B`:`${t.toFixed(1)} ${s[n]}`}function h(t,s,n=""){let o=Math.max(0,Math.min(1,t||0)),a=e("div",{class:"nbc-bar",style:"width:120px"},e("div",{class:"nbc-fill",style:`width:${(o*100).toFixed(1)}%`}));return e("div",{class:`nbc-meter ${n}`,"data-fraction":o.toFixed(3)},a,e("span",{},s))}var v=`
.nbc-store .nbc-message { margin: 4px 0; color: var(--jp-ui-font-color2, #666); }
.nbc-store .nbc-objects { margin-top: 6px; }
.nbc-store code { font-family: var(--jp-code-font-family, monospace); font-size: 11px; }
`;function y(t,s,n){let o=e("table",{},e("thead",{},e("tr",{},...["node","used / capacity","spilled"].map(r=>e("th",{},r))))),a=e("tbody");for(let r of n.nodes||[])a.append(e("tr",{},e("td",{},r.address),e("td",{},h(r.store_capacity?r.store_used/r.store_capacity:0,`${i(r.store_used)} / ${i(r.store_capacity)}`)),e("td",{},i(r.spilled))));o.append(a);let l=e("table",{class:"nbc-objects"},e("thead",{},e("tr",{},...["object","size","variable","owner","call site","refs","pinned by",""].map(r=>e("th",{},r))))),c=e("tbody");for(let r of n.objects||[]){let p=e("button",{class:"nbc-button nbc-free"},"Free");p.disabled=!r.put,p.title=r.put?"delete the notebook variable that holds it":"only put objects can be freed here",p.onclick=()=>{p.disabled=!0,s.send({kind:"free",id:r.id})},c.append(e("tr",{class:"nbc-object-row","data-id":r.id,"data-variable":r.variable},e("td",{},e("code",{},r.id.slice(0,12))),e("td",{class:"nbc-size"},i(r.size)),e("td",{class:"nbc-variable"},r.variable||"–"),e("td",{},r.owner),e("td",{},e("code",{},r.call_site||"")),e("td",{},String(r.refs)),e("td",{},r.pinned),e("td",{},p)))}l.append(c);let b=[e("div",{class:"nbc-title"},"Object store"),o,l];n.message&&b.push(e("div",{class:"nbc-message"},n.message)),t.replaceChildren(...b)}function x({model:t,el:s}){u("nbc-base-css",m),u("nbc-store-css",v);let n=e("div",{class:"nbc-widget nbc-store"});return s.append(n),f(t,()=>{},o=>y(n,t,o))}var C={render:x};export{C as default};
