var M={pending:"var(--jp-layout-color3, #bdbdbd)",running:"var(--jp-brand-color1, #1976d2)",finished:"var(--jp-success-color1, #388e3c)",failed:"var(--jp-error-color1, #d32f2f)",cancelled:"var(--jp-warn-color1, #f57c00)"};function v(e,d,t){let n=structuredClone(e.get("snapshot")||{seq:0}),a=0,s=()=>{let i=e.get("snapshot");i&&i.seq>=n.seq&&(n=structuredClone(i),t(n,!0))},c=(i,f)=>{!i||i.kind!=="delta"||(i.base===n.seq?(d(n,i,f||[]),n.seq=i.seq,t(n,!1)):i.seq>n.seq&&Date.now()-a>1e3&&(a=Date.now(),e.send({kind:"resync"})))};return e.on("change:snapshot",s),e.on("msg:custom",c),t(n,!0),x(e,!0),()=>{e.off("change:snapshot",s),e.off("msg:custom",c),x(e,!1)}}function x(e,d){try{e.send({kind:"view",on:d})}catch{}}function u(e,d){if(document.getElementById(e))return;let t=document.createElement("style");t.id=e,t.textContent=d,document.head.appendChild(t)}var y=`
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
`;function o(e,d={},...t){let n=document.createElement(e);for(let[a,s]of Object.entries(d))s!=null&&(a==="class"?n.className=String(s):a==="style"?n.setAttribute("style",String(s)):a.startsWith("on")?n[a]=s:n.setAttribute(a,String(s)));for(let a of t)n.append(a);return n}function m(e,d=240){let t=o("div",{class:"nbc-bar",style:`width:${d}px`});for(let[n,a]of e)a<=0||t.append(o("div",{"data-state":n,style:`width:${(a*100).toFixed(2)}%;background:${M[n]||n}`}));return t}function b(e){return e==null||!isFinite(e)?"–":e<60?`${e.toFixed(1)} s`:e<3600?`${Math.floor(e/60)} min ${Math.floor(e%60)} s`:`${Math.floor(e/3600)} h ${Math.floor(e%3600/60)} min`}var $=`
.nbc-progress .nbc-row td { vertical-align: middle; }
.nbc-progress .nbc-foot { margin-top: 4px; display: flex; gap: 12px; align-items: center; }
`;function k(e,d,t){let n=t.rows||[],a=o("table",{},o("thead",{},o("tr",{},...["function","","done","queued","running","failed"].map(r=>o("th",{},r))))),s=o("tbody");for(let r of n){let l=Math.max(1,r.total),h=r.finished+r.failed+r.cancelled;s.append(o("tr",{class:"nbc-row","data-name":r.name,"data-percent":Math.round(100*h/l)},o("td",{},r.name),o("td",{},m([["finished",r.finished/l],["failed",r.failed/l],["cancelled",r.cancelled/l],["running",r.running/l],["pending",r.pending/l]])),o("td",{class:"nbc-count"},`${h}/${r.total}`),o("td",{},String(r.pending)),o("td",{},String(r.running)),o("td",{},String(r.failed+r.cancelled))))}a.append(s);let c=t.total||0,i=t.ended||0,f=c?Math.round(100*i/c):0,p=o("button",{class:"nbc-button nbc-cancel"},"Cancel");p.disabled=!!t.done||!!t.cancel_requested,p.onclick=()=>{p.disabled=!0,d.send({kind:"cancel"})};let S=t.done?`done in ${b(t.elapsed)}`:`${(t.rate||0).toFixed(1)} tasks/s · ETA ${b(t.eta)}`,w=o("div",{class:"nbc-foot"},o("span",{class:"nbc-summary"},`${i}/${c} tasks (${f}%)`),o("span",{class:"nbc-muted"},t.cancel_requested&&!t.done?"cancelling…":S),p),g=[o("div",{class:"nbc-title"},`Progress: ${t.title||""}`),a,w];t.error&&g.push(o("div",{class:"nbc-error"},`first error: ${t.error}`)),e.dataset.percent=String(f),e.dataset.done=t.done?"true":"false",e.replaceChildren(...g)}function j({model:e,el:d}){u("nbc-base-css",y),u("nbc-progress-css",$);let t=o("div",{class:"nbc-widget nbc-progress"});return d.append(t),v(e,()=>{},n=>k(t,e,n))}var C={render:j};export{C as default};
